"""`inv migrate` (every refusal included) and what a failing `inv upgrade` reports."""
from contextlib import closing

import psycopg2

from conftest import assert_clean_failure, output

NEW_COLUMN = ("    title: Mapped[str] = mapped_column(Text)\n",
              "    title: Mapped[str] = mapped_column(Text)\n    note: Mapped[str | None] = mapped_column(Text)\n")


def test_migrate_writes_the_revision_and_prints_its_sql_and_lint(project):
    assert project.inv("upgrade").returncode == 0
    project.edit("app/models.py", *NEW_COLUMN)
    before = project.versions()
    proc = project.inv("migrate", "-m", "add cards.note")
    text = output(proc)
    assert proc.returncode == 0, text
    [created] = sorted(set(project.versions()) - set(before))
    assert created.name in text
    assert "ALTER TABLE cards ADD COLUMN note TEXT;" in text
    assert "lint: 1 revision(s), 0 failing finding(s)" in text
    assert "op.add_column('cards'" in created.read_text()


def test_migrate_refuses_while_the_database_is_behind_head(project):
    assert project.inv("upgrade", "--rev", "8a4e6d2c1b35").returncode == 0
    project.edit("app/models.py", *NEW_COLUMN)
    before = project.versions()
    text = assert_clean_failure(project.inv("migrate", "-m", "add note"))
    assert "would repeat the pending ones" in text
    assert "c7d9e1f3a562" in text and "next: inv upgrade" in text
    assert project.versions() == before


def test_migrate_without_a_model_change_writes_no_revision_and_says_so(project):
    assert project.inv("upgrade").returncode == 0
    before = project.versions()
    proc = project.inv("migrate", "-m", "nothing changed")
    assert proc.returncode == 0, output(proc)
    assert "no model changes" in output(proc)
    assert project.versions() == before


def test_migrate_refuses_when_the_migrations_have_two_heads(project):
    assert project.inv("upgrade").returncode == 0
    head = project.root / "migrations/versions/2026_11_23_e2b8f4a6c913_index_cards_by_board_and_done.py"
    fork = head.with_name("2026_11_23_aaaaaaaaaaaa_fork.py")
    fork.write_text(head.read_text().replace("e2b8f4a6c913", "aaaaaaaaaaaa"))
    project.edit("app/models.py", *NEW_COLUMN)
    text = assert_clean_failure(project.inv("migrate", "-m", "add note"))
    assert "2 heads" in text and "aaaaaaaaaaaa" in text and "e2b8f4a6c913" in text
    assert "flask db merge" in text


def test_migrate_warns_loudly_when_the_revision_drops_a_column(project):
    assert project.inv("upgrade").returncode == 0
    project.edit("app/models.py", "    title: Mapped[str] = mapped_column(Text)\n", "")
    project.edit("app/models.py", '            "title": self.title,\n', "")
    proc = project.inv("migrate", "-m", "drop title")
    text = output(proc)
    assert proc.returncode == 0, text
    assert "THIS REVISION DROPS DATA" in text
    assert "ALTER TABLE cards DROP COLUMN title" in text


def test_migrate_warns_loudly_when_a_table_has_no_imported_model(project):
    # A table the migrations created but whose model autogenerate cannot see.
    (project.root / "migrations/versions/2026_11_23_0b0b0b0b0b0b_legacy.py").write_text(
        "from alembic import op\nimport sqlalchemy as sa\n"
        "revision = '0b0b0b0b0b0b'\ndown_revision = 'e2b8f4a6c913'\nbranch_labels = None\ndepends_on = None\n"
        "def upgrade():\n    op.create_table('legacy', sa.Column('id', sa.BigInteger(), primary_key=True))\n"
        "def downgrade():\n    op.drop_table('legacy')\n"
    )
    assert project.inv("upgrade").returncode == 0
    text = output(project.inv("migrate", "-m", "oops"))
    assert "THIS REVISION DROPS DATA" in text and "DROP TABLE legacy" in text


def test_a_message_with_quotes_and_command_substitution_is_only_a_message(project, tmp_path):
    assert project.inv("upgrade").returncode == 0
    project.edit("app/models.py", *NEW_COLUMN)
    marker = tmp_path / "marker"
    message = f"add note 'quoted' \"double\" $(touch {marker}) `touch {marker}`; touch {marker}"
    proc = project.inv("migrate", "-m", message)
    assert proc.returncode == 0, output(proc)
    assert not marker.exists()
    [created] = [p for p in project.versions() if "add_note" in p.name]
    assert f"$(touch {marker})" in created.read_text()


def test_migrate_without_a_message_is_refused(project):
    text = assert_clean_failure(project.inv("migrate", "-m", "  "))
    assert "needs a message" in text


def test_the_first_migration_of_a_project_without_revisions_creates_the_schema(project):
    for path in project.versions():
        path.unlink()
    proc = project.inv("migrate", "-m", "initial schema")
    text = output(proc)
    assert proc.returncode == 0, text
    assert "first migration" in text
    assert "CREATE TABLE boards" in text and "CREATE TABLE cards" in text
    assert len(project.versions()) == 1
    assert project.inv("upgrade").returncode == 0


def test_a_failing_upgrade_reports_the_revision_the_database_is_left_at(project):
    from test_lint_task import add_revision

    assert project.inv("upgrade", "--rev", "c7d9e1f3a562").returncode == 0
    add_revision(project, "fa11fa11fa11", "    op.add_column('cards', sa.Column('x', sa.Text()))\n"
                 "    op.execute('SELECT 1/0')\n")
    text = assert_clean_failure(project.inv("upgrade"))
    assert "division by zero" in text
    # The whole upgrade was one transaction and rolled back, but the index revision's autocommit
    # block had already committed its CREATE INDEX CONCURRENTLY: the message says exactly that.
    assert "next: the database is still at c7d9e1f3a562" in text
    assert "except what the autocommit block of e2b8f4a6c913 committed" in text
    with closing(psycopg2.connect(project.database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_cards_board_id_done'")
        assert cur.fetchone()[0] == 1
    # Its upgrade is idempotent (IF NOT EXISTS), so once the broken revision is gone, upgrade works.
    next(p for p in project.versions() if "fa11fa11fa11" in p.name).unlink()
    assert project.inv("upgrade").returncode == 0


def test_an_app_that_does_not_load_is_named_with_what_to_install_not_blamed_on_a_migration(project):
    project.edit("deploy.toml", 'app = "app:create_app"', 'app = "no_such_module:create_app"')
    text = assert_clean_failure(project.inv("upgrade"))
    assert "could not load the app, so nothing ran" in text and "no_such_module" in text
    assert "pip install -r requirements.txt" in text and "fix the migration" not in text


def test_an_app_that_raises_while_it_loads_is_named_with_the_setting_it_lacks(project):
    project.edit("app/__init__.py", '    """Build the app; `config` overrides what the environment says."""\n',
                 '    """Build the app; `config` overrides what the environment says."""\n'
                 '    raise RuntimeError("MAIL_PASSWORD not found. Declare it as envvar")\n')
    text = assert_clean_failure(project.inv("upgrade"))
    assert "the app raised while `flask --app app:create_app` loaded it, so nothing ran" in text
    assert "RuntimeError: MAIL_PASSWORD not found" in text and "fab env.set" in text
    assert "fix the migration" not in text
