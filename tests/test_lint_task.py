"""`inv lint`: squawk findings per migration file and revision, waivers, render failures."""
from conftest import assert_clean_failure, output

HEAD = "e2b8f4a6c913"


def add_revision(project, rev: str, body: str, down: str = HEAD, header: str = "") -> str:
    name = f"2026_11_24_{rev}_test.py"
    (project.root / "migrations/versions" / name).write_text(
        f'"""test revision {rev}"""\n{header}from alembic import op\nimport sqlalchemy as sa\n\n'
        f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade():\n{body}\n\ndef downgrade():\n    pass\n"
    )
    return name


def test_lint_reports_a_non_concurrent_index_against_its_file_and_revision(project):
    name = add_revision(project, "111111111111", "    op.create_index('ix_cards_title', 'cards', ['title'])\n")
    text = assert_clean_failure(project.inv("lint", "--since", "HEAD"))
    assert f"FAIL migrations/versions/{name}  revision 111111111111" in text
    assert "[require-concurrent-index-creation]" in text
    assert "help: Use `concurrently`" in text
    assert "CREATE INDEX ix_cards_title ON cards (title);" in text


def test_lint_reports_a_required_column_without_default(project):
    add_revision(project, "222222222222",
                 "    op.add_column('cards', sa.Column('rank', sa.BigInteger(), nullable=False))\n")
    text = assert_clean_failure(project.inv("lint", "--since", "HEAD"))
    assert "[adding-required-field]" in text


def test_lint_reports_a_column_type_change(project):
    add_revision(project, "333333333333", "    op.alter_column('cards', 'title', type_=sa.String(50))\n")
    text = assert_clean_failure(project.inv("lint", "--since", "HEAD"))
    assert "[changing-column-type]" in text


def test_a_waived_rule_passes_and_is_reported_as_waived(project):
    add_revision(
        project, "444444444444", "    op.create_index('ix_cards_title', 'cards', ['title'])\n",
        header="# lint: waive require-concurrent-index-creation because cards holds a few rows in every stage\n",
    )
    proc = project.inv("lint", "--since", "HEAD")
    text = output(proc)
    assert proc.returncode == 0, text
    assert "waived: [require-concurrent-index-creation]" in text
    assert "cards holds a few rows in every stage" in text
    assert "0 failing finding(s), 0 warning(s), 1 waived" in text


def test_a_waiver_without_a_reason_fails(project):
    add_revision(project, "555555555555", "    op.create_index('ix_cards_title', 'cards', ['title'])\n",
                 header="# lint: waive require-concurrent-index-creation\n")
    text = assert_clean_failure(project.inv("lint", "--since", "HEAD"))
    assert "has no reason" in text


def test_a_revision_whose_sql_cannot_be_rendered_fails_lint(project):
    add_revision(project, "666666666666", "    raise RuntimeError('cannot render offline')\n")
    text = assert_clean_failure(project.inv("lint", "--since", "HEAD"))
    assert "rendering the SQL" in text and "cannot render offline" in text


def test_lint_covers_only_revisions_added_since_the_ref(project):
    add_revision(project, "777777777777", "    op.create_index('ix_a', 'cards', ['title'])\n")
    project.commit_all("bad index, already reviewed")
    add_revision(project, "888888888888", "    op.add_column('cards', sa.Column('x', sa.Text()))\n",
                 down="777777777777")
    proc = project.inv("lint", "--since", "HEAD")
    text = output(proc)
    assert proc.returncode == 0, text
    assert "888888888888" in text and "777777777777" not in text
    # With no upstream and no --since, every revision is linted, the old finding included.
    assert "require-concurrent-index-creation" in assert_clean_failure(project.inv("lint"))


def test_lint_since_something_that_is_not_a_ref_is_a_clear_error(project):
    text = assert_clean_failure(project.inv("lint", "--since", "--upload-pack=touch /tmp/x"))
    assert "is not a commit" in text


def test_the_seed_migrations_pass_lint(project):
    proc = project.inv("lint")
    assert proc.returncode == 0, output(proc)
    assert "4 revision(s), 0 failing finding(s)" in output(proc)


CLASSIC_TABLE = """    op.create_table('tags',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('created', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'))
"""


def test_a_classic_flask_sqlalchemy_table_passes_with_style_warnings_only(project):
    add_revision(project, "777777777777", CLASSIC_TABLE)
    proc = project.inv("lint", "--since", "HEAD")
    text = output(proc)
    assert proc.returncode == 0, text
    assert "warning: [prefer-bigint-over-int]" in text and "warning: [prefer-text-field]" in text
    assert "warning: [prefer-timestamp-tz]" in text
    assert "0 failing finding(s), 4 warning(s), 0 waived: passed" in text


def test_a_style_rule_taken_out_of_warn_fails_the_gate_again(project):
    project.edit("deploy.toml", 'exclude = []', 'exclude = []\nwarn = ["prefer-text-field", "prefer-timestamp-tz"]')
    add_revision(project, "777777777777", CLASSIC_TABLE)
    text = assert_clean_failure(project.inv("lint", "--since", "HEAD"))
    assert "fails: [prefer-bigint-over-int]" in text and "warning: [prefer-text-field]" in text


def test_revisions_up_to_the_baseline_are_not_linted(project):
    add_revision(project, "111111111111", "    op.create_index('ix_cards_title', 'cards', ['title'])\n")
    assert project.inv("lint", "--since", "HEAD").returncode != 0
    project.edit("deploy.toml", 'exclude = []', 'exclude = []\nbaseline = "111111111111"')
    proc = project.inv("lint", "--since", "HEAD")
    assert proc.returncode == 0 and "no revisions to lint" in output(proc), output(proc)
    project.edit("deploy.toml", 'baseline = "111111111111"', 'baseline = "0badc0ffee00"')
    assert "baseline 0badc0ffee00 is not a revision" in assert_clean_failure(project.inv("lint", "--since", "HEAD"))
