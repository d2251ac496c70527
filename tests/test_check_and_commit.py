"""`inv check` and `inv commit`: one list of problems; commit only after the whole workflow."""
from conftest import assert_clean_failure, git, output
from test_lint_task import add_revision
from test_migrate_task import NEW_COLUMN


def test_check_passes_on_the_seed_migrations(project):
    proc = project.inv("check")
    assert proc.returncode == 0, output(proc)
    for name in ("single head", "round trip", "models match migrations", "lint"):
        assert f"ok    {name}" in proc.stdout


def test_check_lists_drift_between_models_and_migrations(project):
    project.edit("app/models.py", *NEW_COLUMN)
    text = assert_clean_failure(project.inv("check"))
    assert "FAIL  models match migrations" in text
    assert "models and migrations disagree" in text and "note" in text


def test_check_catches_a_downgrade_that_does_not_undo_its_upgrade(project):
    add_revision(project, "999999999999",
                 "    op.add_column('cards', sa.Column('x', sa.Text()))\n")  # downgrade is `pass`
    text = assert_clean_failure(project.inv("check"))
    assert "FAIL  round trip" in text
    assert "revision 999999999999" in text and "cards: columns differ" in text


def test_check_reports_several_heads_and_skips_what_needs_one(project):
    add_revision(project, "aaaaaaaaaaaa", "    pass\n", down="c7d9e1f3a562")
    text = assert_clean_failure(project.inv("check"))
    assert "FAIL  single head" in text and "2 heads" in text
    assert "skip  round trip" in text


def test_commit_refuses_when_the_migration_was_not_applied_locally(project):
    assert project.inv("upgrade").returncode == 0
    project.edit("app/models.py", *NEW_COLUMN)
    assert project.inv("migrate", "-m", "add note").returncode == 0
    head_before = git(project.root, "rev-parse", "HEAD")
    text = assert_clean_failure(project.inv("commit"))
    assert "`inv upgrade` was skipped" in text
    assert git(project.root, "rev-parse", "HEAD") == head_before


def test_commit_refuses_model_changes_without_a_migration(project):
    assert project.inv("upgrade").returncode == 0
    project.edit("app/models.py", *NEW_COLUMN)
    text = assert_clean_failure(project.inv("commit"))
    assert "`inv migrate" in text and "was skipped" in text
    assert "models and migrations disagree" in text


def test_the_whole_workflow_ends_in_a_commit_of_the_migration_and_the_model(project):
    assert project.inv("upgrade").returncode == 0
    project.edit("app/models.py", *NEW_COLUMN)
    assert project.inv("migrate", "-m", "add cards.note").returncode == 0
    assert project.inv("upgrade").returncode == 0
    unrelated = project.root / "notes.txt"
    unrelated.write_text("not part of the migration")
    proc = project.inv("commit")
    assert proc.returncode == 0, output(proc)
    committed = git(project.root, "show", "--name-only", "--format=%s", "HEAD").split()
    assert "app/models.py" in committed
    assert any(name.endswith("_add_cards_note.py") for name in committed)
    assert "notes.txt" not in committed
    assert "add cards.note" in git(project.root, "log", "-1", "--format=%s")
    assert "nothing to commit" in project.inv("commit").stdout
