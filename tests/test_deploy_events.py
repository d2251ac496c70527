"""A deploy's events posted to webhooks and its hooks run, on the sandbox fleet: a webhook that
hangs blocks nothing, and a failing before hook stops the deploy with everything undone."""
from __future__ import annotations

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import GOOD_MIGRATION, add_migration, current, sql
from receiver import Receiver

pytestmark = pytest.mark.timeout(300)


def with_notify_and_hooks(project, seen) -> None:
    with open(project.root / "deploy.toml", "a") as f:
        f.write(f'''
[stages.sandbox.notify]
webhook = "env:TEST_WEBHOOK"
slack = "env:TEST_SLACK"
timeout = 1

[stages.sandbox.hooks]
before_migrate = ["sh", "-c", "echo before_migrate $FLASK_DEPLOY_RELEASE $FLASK_DEPLOY_REVISIONS >> {seen}; test ! -e {seen}.fail"]
after_switch = "sh -c 'echo after_switch $FLASK_DEPLOY_HOSTS >> {seen}'"
on_failure = "sh -c 'echo on_failure $FLASK_DEPLOY_OUTCOME >> {seen}'"
after_deploy = "sh -c 'echo after_deploy $FLASK_DEPLOY_OUTCOME >> {seen}'"
''')
    project.commit_all("notify and hooks")
    project.push()


def test_a_deploy_posts_its_events_runs_its_hooks_and_a_hanging_webhook_blocks_nothing(deployed, tmp_path):
    seen = tmp_path / "seen"
    with_notify_and_hooks(deployed, seen)
    webhook, hanging = Receiver(), Receiver(delay=30)
    env = {"TEST_WEBHOOK": webhook.url + "/events", "TEST_SLACK": hanging.url + "/slack"}
    try:
        add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
        deployed.push()
        good = deployed.fab("deploy", db=False, env=env)
        assert good.returncode == 0, output(good)
        release = current(deployed, "app1")
        (tmp_path / "seen.fail").touch()
        deployed.edit("app/models.py", "class Board", "# a change\nclass Board")
        deployed.commit_all("a change")
        deployed.push()
        failed = deployed.fab("deploy", db=False, env=env)
        after_failure = current(deployed, "app1"), sql(deployed, "SELECT version_num FROM alembic_version")
        rolled = deployed.fab("rollback", db=False, env=env)
        assert rolled.returncode == 0, output(rolled)
    finally:
        webhook.close()
        hanging.close()
    text = assert_clean_failure(failed)
    assert "step 'migrate' failed: the before_migrate hook exited with 1" in text, text
    assert after_failure == (release, "a0d0a0d0beef"), "the failed deploy changed nothing"
    assert current(deployed, "app2") == deployed.first_release, "then rolled back"
    assert "notify: slack: no answer within 1s" in good.stdout, good.stdout
    events = [(body["event"], body.get("outcome")) for _, _, body in webhook.received]
    assert events == [("started", None), ("succeeded", "ok"), ("started", None), ("failed", "failed"),
                      ("rolled_back", "ok")], events
    assert webhook.received[4][2]["release"] == deployed.first_release and webhook.received[4][2]["previous"] == release
    succeeded = webhook.received[1][2]
    assert succeeded["release"] == release and succeeded["revisions"] == ["a0d0a0d0beef"]
    assert succeeded["duration_seconds"] > 0 and "before_migrate hook" in webhook.received[3][2]["error"]
    lines = seen.read_text().splitlines()
    assert lines[:3] == [f"before_migrate {release} a0d0a0d0beef", "after_switch app1 app2", "after_deploy ok"], lines
    assert lines[3].startswith("before_migrate ") and lines[3] != lines[0] and lines[4:] == ["on_failure failed"], lines
