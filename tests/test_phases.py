"""Pre and post revisions, read from the revision files, on the controller and in a release:
the graph, `inv history`, lint's compatibility rules, the order rule and the health answer.
In-process or against the local PostgreSQL; the deploys are in test_expand_contract.py."""
import json
import subprocess
import sys

import pytest
from conftest import assert_clean_failure, output
from test_lint_task import add_revision

from deploy.errors import MigrationError
from deploy.migrations import MigrationGraph
from deploy.phases import split

HEAD = "e2b8f4a6c913"
POST = 'phase = "post"\n'
DROP_TITLE = "    op.drop_column('cards', 'title')\n"
ADD_NAME = "    op.add_column('cards', sa.Column('name', sa.Text(), nullable=True))\n"


def test_a_revision_marked_post_is_read_as_post_and_history_shows_it(project):
    add_revision(project, "a1a1a1a1a1a1", DROP_TITLE, header=POST)
    graph = MigrationGraph(project.root / "migrations")
    assert graph.get("a1a1a1a1a1a1").phase == "post" and graph.get(HEAD).phase == "pre"
    assert graph.get("a1a1a1a1a1a1").label().endswith("[post]")
    history = project.inv("history", db=False)
    line = next(line for line in output(history).splitlines() if "a1a1a1a1a1a1" in line)
    assert "post" in line and "post" not in next(line for line in output(history).splitlines() if HEAD + " " in line)


def test_an_unknown_phase_is_refused_naming_the_file(project):
    name = add_revision(project, "a2a2a2a2a2a2", DROP_TITLE, header='phase = "later"\n')
    with pytest.raises(MigrationError, match=f"{name}: phase = 'later'"):
        MigrationGraph(project.root / "migrations").get("a2a2a2a2a2a2")


def test_pre_revisions_run_before_the_switch_and_post_ones_after_in_chain_order(project):
    add_revision(project, "b1b1b1b1b1b1", ADD_NAME)
    add_revision(project, "b2b2b2b2b2b2", DROP_TITLE, down="b1b1b1b1b1b1", header=POST)
    graph = MigrationGraph(project.root / "migrations")
    pre, post = split(graph.pending((HEAD,)))
    assert [r.id for r in pre] == ["b1b1b1b1b1b1"] and [r.id for r in post] == ["b2b2b2b2b2b2"]


def test_a_pre_revision_after_a_post_one_not_yet_run_is_refused_with_the_way_past_it(project):
    add_revision(project, "c1c1c1c1c1c1", DROP_TITLE, header=POST)
    add_revision(project, "c2c2c2c2c2c2", ADD_NAME, down="c1c1c1c1c1c1")
    graph = MigrationGraph(project.root / "migrations")
    with pytest.raises(MigrationError) as refused:
        split(graph.pending((HEAD,)))
    assert "c2c2c2c2c2c2" in str(refused.value) and "after the post revision c1c1c1c1c1c1" in str(refused.value)
    assert "fab migrate --post" in refused.value.hint
    assert split(graph.pending(("c1c1c1c1c1c1",))) == ([graph.get("c2c2c2c2c2c2")], [])  # once it has run


def test_lint_fails_a_drop_in_a_pre_revision_with_the_way_out_and_passes_it_in_a_post_one(project):
    add_revision(project, "d1d1d1d1d1d1", DROP_TITLE)
    text = assert_clean_failure(project.inv("lint", "--since", "HEAD"))
    assert "[ban-drop-column]" in text and "make the revision post" in text and "expand, backfill and contract" in text
    (project.root / "migrations/versions/2026_11_24_d1d1d1d1d1d1_test.py").unlink()
    add_revision(project, "d2d2d2d2d2d2", DROP_TITLE, header=POST)
    passed = project.inv("lint", "--since", "HEAD")
    assert passed.returncode == 0, output(passed)
    assert "contract (post: runs after the switch): [ban-drop-column]" in output(passed)


def test_a_rename_fails_lint_in_either_phase(project):
    """A post revision runs after the new code serves: renamed there, the new code breaks instead."""
    rename = "    op.alter_column('cards', 'title', new_column_name='name')\n"
    add_revision(project, "e1e1e1e1e1e1", rename, header=POST)
    text = assert_clean_failure(project.inv("lint", "--since", "HEAD"))
    assert "fails: [renaming-column]" in text and "expand, backfill and contract" in text


def health_of(project) -> tuple[int, dict]:
    """The project's app, as a release serves it, asked its health path once."""
    code = ("import json; from werkzeug.test import Client; from deploy_runtime.wsgi import serve; "
            "answer = Client(serve('app:create_app')).get('/healthz'); "
            "print(json.dumps([answer.status_code, answer.get_json()]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "DATABASE_URL": project.database_url, "RELEASE": "r2",
                               "PYTHONPATH": str(project.root)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return tuple(json.loads(proc.stdout))


def test_a_release_is_healthy_below_its_head_by_post_revisions_only(project):
    add_revision(project, "f1f1f1f1f1f1", ADD_NAME)
    add_revision(project, "f2f2f2f2f2f2", DROP_TITLE, down="f1f1f1f1f1f1", header=POST)
    assert project.inv("upgrade", "--rev", HEAD).returncode == 0
    code, body = health_of(project)
    assert code == 503 and body["revision"] == HEAD, body  # its pre revision has not run
    assert project.inv("upgrade", "--rev", "f1f1f1f1f1f1").returncode == 0
    code, body = health_of(project)
    assert code == 200 and body["revision"] == "f1f1f1f1f1f1" and body["post_pending"] == ["f2f2f2f2f2f2"], body
    assert project.inv("upgrade").returncode == 0
    code, body = health_of(project)
    assert code == 200 and body["revision"] == "f2f2f2f2f2f2" and "post_pending" not in body, body


def test_the_worked_example_passes_lint_step_by_step_and_the_one_step_rename_does_not(project):
    from bench.rename_example import ONE_STEP_RENAME, SAFE_RENAME

    for step in SAFE_RENAME:
        for path, old, new in step.edits:
            project.edit(path, old, new)
        (project.root / "migrations/versions" / step.filename).write_text(step.migration)
        project.commit_all(step.title)
        linted = project.inv("lint", "--since", "HEAD~1", db=False)
        assert linted.returncode == 0, step.title + "\n" + output(linted)
    assert "contract (post: runs after the switch): [ban-drop-column]" in output(linted)
    git_reset = subprocess.run(["git", "reset", "-q", "--hard", "HEAD~3"], cwd=project.root)
    assert git_reset.returncode == 0
    (project.root / "migrations/versions" / ONE_STEP_RENAME.filename).write_text(ONE_STEP_RENAME.migration)
    assert "fails: [renaming-column]" in assert_clean_failure(project.inv("lint", "--since", "HEAD", db=False))


def test_inv_check_fails_a_drop_in_a_pre_revision_with_the_way_out(project):
    project.edit("app/models.py", "    title: Mapped[str] = mapped_column(Text)\n", "")
    project.edit("app/models.py", '            "title": self.title,\n', "")
    add_revision(project, "a3a3a3a3a3a3", DROP_TITLE)
    text = assert_clean_failure(project.inv("check"))
    assert "ban-drop-column: Dropping a column" in text and "make the revision post" in text, text
