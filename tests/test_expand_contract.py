"""Old code on the new schema, checked rather than hoped for: pre and post revisions, the
schema check of the serving release before the switch, an expanded schema kept on failure
and on rollback, and the worked example (bench/rename_example.py) under load. On the
sandbox fleet, with the stage's default undo_expand = "keep"."""
from __future__ import annotations

import json
import urllib.request

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import (GOOD_MIGRATION, HEAD, Load, add_migration, break_the_app, current, deploy, health, sql,
                           ssh, through_lb)

from bench.rename_example import CONTRACT, ONE_STEP_RENAME, SAFE_RENAME, Step, revision_file

pytestmark = pytest.mark.timeout(420)
COLUMNS = "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = '{}'"


@pytest.fixture
def keeping(deployed):
    """The fleet's project with the stage's default for a failed deploy's expanded schema."""
    deployed.edit("deploy.toml", 'undo_expand = "downgrade"\n', "")
    deployed.commit_all("undo_expand: the default")
    deployed.push()
    return deployed


def take(project, step: Step) -> None:
    """One step of an example: its revision and code edits, committed and pushed."""
    for path, old, new in step.edits:
        project.edit(path, old, new)
    add_migration(project, step.migration, step.filename)


def cards_load(project) -> Load:
    """Users reading and adding cards of one board, through the load balancer."""
    board = sql(project, "SELECT id FROM boards WHERE name = 'kept'")
    [url] = through_lb(project, f"/boards/{board}/cards")
    write = urllib.request.Request(url, data=json.dumps({"title": "written under load"}).encode(),
                                   headers={"Content-Type": "application/json"}, method="POST")
    return Load([url, write])


def test_a_column_renamed_in_three_deploys_drops_no_request_and_keeps_every_title(keeping):
    load = cards_load(keeping)
    load.start()
    try:
        for step in SAFE_RENAME:
            take(keeping, step)
            proc = deploy(keeping)
            assert proc.returncode == 0, step.title + "\n" + output(proc)
            assert load.failures == [], (step.title, load.failures[:3])
    finally:
        load.stop()
    text = output(proc)
    assert "post revisions: ec0000000003 (drop cards.title) [post]" in text and "-> compat" in text
    assert text.index("healthy on") < text.index("post revisions:")  # dropped once every host serves the new code
    assert load.failures == [] and load.ok > 50, (load.ok, load.failures[:3])
    assert sql(keeping, COLUMNS.format("cards")) == "board_id,created_at,done,id,name"
    assert sql(keeping, "SELECT count(*) FROM cards WHERE name IS NULL") == "0"
    assert int(sql(keeping, "SELECT count(*) FROM cards WHERE name = 'written under load'")) > 5
    assert health(keeping, "app2")["revision"] == "ec0000000003"


def test_a_one_step_rename_is_refused_by_lint_and_when_waived_stopped_before_any_host_switches(keeping):
    take(keeping, ONE_STEP_RENAME)
    refused = assert_clean_failure(deploy(keeping))
    assert "[renaming-column]" in refused and "expand, backfill and contract" in refused
    assert "-> build" not in refused
    waived = ONE_STEP_RENAME.migration.replace("from alembic import op",
                                               "# lint: waive renaming-column because the schema check must stop it\n"
                                               "from alembic import op")
    add_migration(keeping, waived, ONE_STEP_RENAME.filename)
    stopped = assert_clean_failure(deploy(keeping))
    assert "step 'compat' failed" in stopped and "would break on the migrated schema" in stopped, stopped
    assert "cards.title: the column is gone (or renamed)" in stopped and "-> switch" not in stopped, stopped
    assert sql(keeping, "SELECT version_num FROM alembic_version") == HEAD
    assert "title" in sql(keeping, COLUMNS.format("cards")).split(",")
    assert current(keeping, "app1") == current(keeping, "app2") == keeping.first_release


def test_post_revisions_held_back_run_with_fab_migrate_post_and_a_failing_one_leaves_the_new_release_serving(keeping):
    keeping.edit("deploy.toml", 'rollback = "downgrade-or-restore"\n',
                 'rollback = "downgrade-or-restore"\npost_migrations = "manual"\n')
    add_migration(keeping, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")  # pre: boards.note, which no code maps
    drop = revision_file("d0d0d0d0d0d0", "a0d0a0d0beef", "drop boards.note", '    op.drop_column("boards", "note")\n',
                         '    op.add_column("boards", sa.Column("note", sa.Text()))\n', header='phase = "post"\n')
    add_migration(keeping, drop, "d0d0d0d0d0d0_drop_the_note.py")
    plan = deploy(keeping, "--dry-run")
    assert plan.returncode == 0, output(plan)
    assert "migration d0d0d0d0d0d0 (drop boards.note) [post] after the switch: held back for fab migrate --post" \
        in output(plan)
    proc = deploy(keeping)
    assert proc.returncode == 0, output(proc)
    assert "post revisions not run: d0d0d0d0d0d0 (drop boards.note) [post]" in output(proc)
    assert sql(keeping, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"
    release = current(keeping, "app1")
    assert health(keeping, "app1") == {"release": release, "revision": "a0d0a0d0beef", "status": "ok", "env_reload": True,
                                       "expected_revision": "d0d0d0d0d0d0", "post_pending": ["d0d0d0d0d0d0"]}
    assert_clean_failure(keeping.fab("migrate", db=False))  # --post is required
    ran = keeping.fab("migrate", "--post", db=False)
    assert ran.returncode == 0, output(ran)
    assert "backup " in output(ran) and "database a0d0a0d0beef -> d0d0d0d0d0d0 (post)" in output(ran)
    assert "note" not in sql(keeping, COLUMNS.format("boards"))
    again = keeping.fab("migrate", "--post", db=False)
    assert again.returncode == 0 and "nothing to run" in output(again), output(again)

    keeping.edit("deploy.toml", 'post_migrations = "manual"\n', "")
    failing = revision_file("fa11fa11fa11", "d0d0d0d0d0d0", "fail after the switch", '    op.execute("SELECT 1 / 0")\n',
                            "    pass\n", header='phase = "post"\n')
    add_migration(keeping, failing, "fa11fa11fa11_fail.py")
    failed = deploy(keeping)
    text = assert_clean_failure(failed)
    new = current(keeping, "app1")
    assert f"deployed {new}" in text and "the post revisions failed" in text and "division by zero" in text, text
    assert f"the release {new} serves on (nothing was switched back); the database is at d0d0d0d0d0d0" in text
    assert "fab migrate --post" in text and new != release and current(keeping, "app2") == new
    assert health(keeping, "app2")["post_pending"] == ["fa11fa11fa11"]
    entry = json.loads(ssh(keeping, "app1", "tail -1 /srv/app/deploy.log").stdout)
    assert entry["action"] == "migrate-post" and entry["outcome"] == "failed" and entry["revision_after"] == "d0d0d0d0d0d0"


def test_an_expanded_schema_is_kept_by_a_failed_deploy_and_by_a_rollback_and_a_post_revision_is_never_downgraded(
        keeping):
    add_migration(keeping, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    break_the_app(keeping)
    failed = assert_clean_failure(deploy(keeping))
    assert "step 'switch' failed" in failed and "database kept at a0d0a0d0beef" in failed, failed
    assert sql(keeping, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"
    assert current(keeping, "app1") == current(keeping, "app2") == keeping.first_release
    live = "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8000/livez\").status)'"
    assert [ssh(keeping, host, live).stdout.strip() for host in ("app1", "app2")] == ["200", "200"]

    keeping.edit("app/__init__.py", '    if "gunicorn" in', '    if False and "gunicorn" in')
    keeping.commit_all("mend the app")
    keeping.push()
    fixed = deploy(keeping)
    assert fixed.returncode == 0, output(fixed)
    rolled = keeping.fab("rollback", "--to", keeping.first_release, db=False)
    assert rolled.returncode == 0, output(rolled)
    assert "database: kept at a0d0a0d0beef" in output(rolled) and "was checked to work on it" in output(rolled)
    assert sql(keeping, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"
    assert current(keeping, "app2") == keeping.first_release

    add_migration(keeping, CONTRACT.migration.replace('down_revision = "ec0000000002"', 'down_revision = "a0d0a0d0beef"')
                  .replace('"cards", "title"', '"boards", "note"').replace('"cards", sa.Column("title"',
                                                                          '"boards", sa.Column("note"')
                  .replace("UPDATE cards SET title = name", "SELECT 1"), CONTRACT.filename)
    contracted = deploy(keeping)
    assert contracted.returncode == 0, output(contracted)
    refused = assert_clean_failure(keeping.fab("rollback", "--to", keeping.first_release, db=False))
    assert "post revision(s) ec0000000003" in refused and "never downgraded automatically" in refused, refused
    assert sql(keeping, "SELECT version_num FROM alembic_version") == "ec0000000003"
