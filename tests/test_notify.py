"""Deploy events to webhooks (deploy/notify.py) and local hooks (deploy/hooks.py), against a
real HTTP receiver the test starts: the payloads, a receiver that hangs or fails (never
blocking or failing the caller, reported without the URL), and the settings' refusals."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from receiver import Receiver

from deploy import hooks, notify
from deploy.config import _Table
from deploy.errors import ConfigError
from deploy.pipeline import DeployFailed, Step, run

TOKEN = "T0KEN-in-the-url-x7"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


EVENT = {"action": "deploy", "stage": "production", "hosts": ["app1"], "user": "ann", "outcome": "failed",
         "error": "step 'migrate' failed: boom", "duration_seconds": 12.5, "release": "20261125-abc",
         "commit": "abc123", "ref": "main", "revisions": ["ec01"]}


def settings_for(monkeypatch, **urls) -> notify.NotifySettings:
    for name, url in urls.items():
        monkeypatch.setenv(f"HOOK_{name.upper()}", url)
    data = {name: f"env:HOOK_{name.upper()}" for name in urls}
    if "grafana" in urls:
        monkeypatch.setenv("GRAFANA_TOKEN", "gtoken")
        data["grafana_token"] = "env:GRAFANA_TOKEN"
    return notify.settings(_Table(Path("deploy.toml"), {**data, "timeout": 2}, "stages.p.notify"))


def test_each_target_gets_its_own_format_with_the_event_s_facts(monkeypatch, receiver):
    s = settings_for(monkeypatch, slack=receiver.url + f"/slack/{TOKEN}", webhook=receiver.url + "/json",
                     grafana=receiver.url + "/grafana")
    n = notify.Notifier(s)
    n.send("failed", EVENT)
    assert n.wait() == []
    by_path = {path.split("/")[1]: (headers, body) for path, headers, body in receiver.received}
    slack = by_path["slack"][1]
    assert "failed" in slack["text"] and "production" in slack["text"] and slack["blocks"][0]["type"] == "section"
    assert any("boom" in b.get("text", {}).get("text", "") for b in slack["blocks"])
    generic = by_path["json"][1]
    assert {k: generic[k] for k in EVENT} == EVENT and generic["event"] == "failed" and generic["time_epoch"] > 0
    assert {path for path, _, _ in receiver.received} == {f"/slack/{TOKEN}", "/json", "/grafana/api/annotations"}
    headers, annotation = by_path["grafana"]
    assert headers["Authorization"] == "Bearer gtoken" and "production" in annotation["tags"]
    assert annotation["timeEnd"] - annotation["time"] == 12500


def test_a_hanging_or_failing_webhook_never_blocks_and_is_reported_without_its_url(monkeypatch, capsys):
    hanging, failing = Receiver(delay=30), Receiver(status=500)
    try:
        s = settings_for(monkeypatch, slack=hanging.url + f"/{TOKEN}", webhook=failing.url + f"/{TOKEN}")
        n = notify.Notifier(s)
        started = time.monotonic()
        n.send("started", EVENT)
        assert time.monotonic() - started < 0.5, "sending waits for nobody"
        problems = n.wait()
        assert time.monotonic() - started < 4, "the wait is bounded by the timeout"
    finally:
        hanging.close()
        failing.close()
    assert any("slack: no answer within 2s" in p for p in problems), problems
    assert any("webhook: the webhook answered HTTP 500" in p for p in problems), problems
    shown = capsys.readouterr()
    assert TOKEN not in shown.out + shown.err and "127.0.0.1" not in shown.out + shown.err


def test_a_missing_secret_or_an_unlisted_event_sends_nothing_and_says_which(monkeypatch, receiver):
    monkeypatch.delenv("NOWHERE", raising=False)
    s = notify.settings(_Table(Path("deploy.toml"), {"webhook": "env:NOWHERE", "events": ["failed"]}, "n"))
    n = notify.Notifier(s)
    n.send("succeeded", EVENT)
    assert n.threads == []
    n.send("failed", EVENT)
    assert n.wait() == ["webhook: env:NOWHERE is empty or missing"]


def test_a_url_written_into_deploy_toml_is_refused():
    with pytest.raises(ConfigError, match="env:NAME or file:PATH"):
        notify.settings(_Table(Path("deploy.toml"), {"slack": "https://hooks.slack.com/services/x"}, "n"))
    with pytest.raises(ConfigError, match="events among"):
        notify.settings(_Table(Path("deploy.toml"), {"events": ["exploded"]}, "n"))


def test_hooks_get_the_deploy_s_facts_a_failing_before_hook_stops_its_step_and_everything_is_undone(tmp_path):
    seen = tmp_path / "seen"
    table = {"before_migrate": ["sh", "-c", 'echo "$FLASK_DEPLOY_HOOK $FLASK_DEPLOY_RELEASE $FLASK_DEPLOY_REVISIONS" '
                                            f'>> {seen}; exit 3'],
             "after_build": f"sh -c 'echo after build >> {seen}; exit 1'"}
    settings = hooks.settings(_Table(Path("deploy.toml"), table, "stages.p.hooks"))
    done = []
    steps = [Step("build", lambda d: done.append("build"), lambda d: done.append("undo build")),
             Step("migrate", lambda d: done.append("migrate"), lambda d: done.append("undo migrate"))]
    hooked = hooks.around(steps, settings, lambda: {"release": "r1", "revisions": ["a", "b"]}, tmp_path)
    with pytest.raises(DeployFailed) as failed:
        run(hooked, None, lambda event, step: None)
    assert "the before_migrate hook exited with 3" in str(failed.value)
    assert done == ["build", "undo migrate", "undo build"], "migrate never ran; everything was undone"
    assert seen.read_text() == "after build\nbefore_migrate r1 a b\n", "a failing after hook is reported only"


def test_the_hooks_name_every_step_of_the_deploy_and_no_other():
    from deploy.steps import STEPS
    assert hooks.STEP_NAMES == tuple(s.name for s in STEPS)  # hooks.py cannot import steps.py (a cycle)


def test_a_hook_that_hangs_is_stopped_and_unknown_hooks_are_refused(tmp_path):
    settings = hooks.settings(_Table(Path("deploy.toml"), {"after_deploy": "sleep 30", "timeout": 1}, "h"))
    started = time.monotonic()
    assert hooks.run(settings, "after_deploy", {}, tmp_path) is False
    assert time.monotonic() - started < 5
    with pytest.raises(ConfigError, match="a hook among"):
        hooks.settings(_Table(Path("deploy.toml"), {"before_lunch": "true"}, "h"))
