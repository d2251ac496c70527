"""`fab env`: the app's environment on the stage, changed alike on every host through a
graceful reload, undone everywhere when a host fails, and never printed or logged. On the
sandbox fleet, with real systemd reading the same file (EnvironmentFile=) as the toolkit."""
from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import Load, deploy_and_seed, health, run_until, ssh, through_lb
from receiver import Receiver, notifying

from deploy.env_text import assignment
from deploy.sandbox import faults
from deploy_runtime.environment import digest

pytestmark = pytest.mark.timeout(300)
APPS, HOLDERS = ("app1", "app2"), ("app1", "app2", "db")
ODD = {"APP_GREETING": 'q"uo\'te $HOME `x` \\ back #not a comment ; semi',
       "APP_MULTI": "first line\n  second line  \n",
       "APP_SPACES": "  padded  ",
       "APP_EMPTY": ""}


ENV_ROUTE = (("    app.register_blueprint(api)\n",
              "    app.register_blueprint(api)\n"
              "    app.add_url_rule('/test-env', 'test_env', lambda: {k: v for k, v in os.environ.items()\n"
              "                                                     if k.startswith('APP_')})\n"),)


@pytest.fixture
def reporting(staged):
    """The fleet's project whose app answers /test-env with the APP_* variables its worker sees."""
    for old, new in ENV_ROUTE:
        staged.edit("app/__init__.py", old, new)
    staged.commit_all("the app reports its APP_* environment")
    staged.push()
    return deploy_and_seed(staged, "kept")


def worker_env(project, host: str) -> dict[str, str]:
    """What the app's worker on `host` reads from its environment (the APP_* variables)."""
    address = project.sandbox.find(host).address
    with urllib.request.urlopen(f"http://{address}:8000/test-env", timeout=10) as answer:
        return json.loads(answer.read())


def when_up(ask, seconds: float = 30):
    """`ask()`'s answer once the app answers (after a restart)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ask()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def main_pid(project, host: str) -> str:
    return ssh(project, host, "systemctl show -p MainPID --value app.service").stdout.strip()


def files(project) -> dict[str, str]:
    """Each host's env file digest and what lies beside it (no change left half-done)."""
    return {h: ssh(project, h, "sha256sum /srv/app/shared/env; ls -a /srv/app/shared | grep -vx env.key").stdout
            for h in HOLDERS}


def log_lines(project) -> list[dict]:
    return [json.loads(line) for line in ssh(project, "app1", "cat /srv/app/deploy.log").stdout.splitlines()]


def test_env_set_reaches_every_worker_by_a_graceful_reload_with_each_character_as_systemd_reads_it(reporting):
    deployed = reporting
    masters = {h: main_pid(deployed, h) for h in APPS}
    load = Load(through_lb(deployed, "/boards"))
    load.start()
    try:
        several = deployed.fab("env.set", "-", db=False, input="".join(assignment(k, v) for k, v in ODD.items()))
        assert several.returncode == 0, output(several)
        plain = deployed.fab("env.set", "APP_PLAIN=simple value", db=False)
        assert plain.returncode == 0, output(plain)
    finally:
        load.stop()
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:3])
    expected = {**ODD, "APP_PLAIN": "simple value"}
    for host in APPS:
        assert main_pid(deployed, host) == masters[host], "a reload keeps the master: no restart"
        seen = worker_env(deployed, host)
        assert {k: seen.get(k) for k in expected} == expected, host
    restarted = ssh(deployed, "app1", "sudo -n systemctl --no-pager restart app.service")
    assert restarted.returncode == 0, restarted.stderr
    by_systemd = when_up(lambda: worker_env(deployed, "app1"))
    assert {k: by_systemd.get(k) for k in expected} == expected, "systemd reads the file as the toolkit does"

    shown = deployed.fab("env", db=False)
    assert shown.returncode == 0 and all(f"{k}=" in shown.stdout for k in expected), output(shown)
    assert "APP_EMPTY=(empty)" in shown.stdout and "simple value" not in shown.stdout, shown.stdout
    revealed = deployed.fab("env", "--show", db=False)
    assert 'APP_PLAIN="simple value"' in revealed.stdout, output(revealed)

    removed = deployed.fab("env.unset", "APP_MULTI,APP_EMPTY", db=False)
    assert removed.returncode == 0, output(removed)
    for host in APPS:
        left = worker_env(deployed, host)
        assert "APP_MULTI" not in left and "APP_EMPTY" not in left and left.get("APP_PLAIN") == "simple value"
    again = deployed.fab("env.set", "APP_PLAIN=simple value", db=False)
    assert again.returncode == 0 and "nothing changed" in again.stdout, output(again)
    assert deployed.fab("env.diff", db=False).returncode == 0

    entries = [e for e in log_lines(deployed) if e.get("action") == "env"]
    assert [e["outcome"] for e in entries] == ["ok", "ok", "ok"] and entries[0]["user"], entries
    assert entries[0]["keys"]["added"] == sorted(ODD) and entries[2]["keys"]["removed"] == ["APP_EMPTY", "APP_MULTI"]
    everything = "\n".join(output(p) for p in (several, plain, shown, removed)) + json.dumps(entries)
    assert "simple value" not in everything and "second line" not in everything and "padded" not in everything


def test_a_change_the_app_cannot_serve_with_is_undone_everywhere_then_hosts_that_disagree_are_shown_and_pushed_alike(
        deployed, tmp_path):
    before = files(deployed)
    url = ssh(deployed, "app1", "grep ^DATABASE_URL= /srv/app/shared/env").stdout.strip().split("=", 1)[1]
    wrong = url.split("://", 1)[0] + "://app:wrong-password-x9@" + url.split("@", 1)[1]
    proc = deployed.fab("env.set", "DATABASE_URL", db=False, input=wrong + "\n")
    text = assert_clean_failure(proc)
    assert "step 'reload' failed" in text and "undone:" in text and "NOT undone" not in text, text
    assert "wrong-password-x9" not in text
    assert files(deployed) == before
    served = ssh(deployed, "app2", "cat /srv/app/shared/env").stdout
    key = ssh(deployed, "app2", "cat /srv/app/shared/env.key").stdout.strip().encode()
    assert health(deployed, "app2")["env_digest"] == digest(served.encode(), key)
    assert log_lines(deployed)[-1]["outcome"] == "failed"

    ssh(deployed, "app2", "printf 'APP_ONLY_HERE=on-app2-x5\\n' >> /srv/app/shared/env")
    differ = deployed.fab("env.diff", db=False)
    assert differ.returncode == 1 and "APP_ONLY_HERE: unset on app1, backup, db; value A on app2" in differ.stdout, \
        output(differ)
    assert "on-app2-x5" not in output(differ)
    pushed_file = tmp_path / "env"
    pushed_file.write_text(served + "APP_PUSHED='pushed value'\n")
    pushed = deployed.fab("env.push", str(pushed_file), db=False)
    assert pushed.returncode == 0 and "added APP_PUSHED; removed APP_ONLY_HERE" in pushed.stdout, output(pushed)
    assert deployed.fab("env.diff", db=False).returncode == 0
    for host in HOLDERS:
        assert ssh(deployed, host, "stat -c '%a %U' /srv/app/shared/env").stdout.strip() == "600 deploy", host


def test_a_host_cut_off_during_an_env_change_is_put_back_everywhere_by_the_undo_or_by_recover(deployed):
    before = files(deployed)
    proc = run_until(deployed, "-> reload", ["env.set", "APP_X=1"])
    faults.apply(deployed.sandbox, "app2", "cut-network")
    try:
        rest = proc.communicate(timeout=120)[0]
    finally:
        faults.apply(deployed.sandbox, "app2", "restore-network")
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text and "app2" in text, text
    if "NOT undone" in text:
        assert "fab recover --stage sandbox" in text, text
        assert "INTERRUPTED" in deployed.fab("status", db=False).stdout
        recovered = deployed.fab("recover", db=False)
        assert recovered.returncode == 0, output(recovered)
    assert files(deployed) == before
    assert deployed.fab("env.diff", db=False).returncode == 0


def test_an_env_change_whose_controller_was_killed_is_undone_by_recover(deployed):
    before = files(deployed)
    proc = run_until(deployed, "-> reload", ["env.set", "APP_Y=2"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    shown = deployed.fab("status", db=False)
    assert "INTERRUPTED" in shown.stdout and "env change of APP_Y" in shown.stdout, output(shown)
    refused = assert_clean_failure(deployed.fab("env.set", "APP_Z=3", db=False))
    assert "fab recover" in refused, refused
    notifying(deployed)
    webhook = Receiver()
    try:
        recovered = deployed.fab("recover", db=False, env={"TEST_WEBHOOK": webhook.url})
    finally:
        webhook.close()
    assert recovered.returncode == 0 and "env file as before" in recovered.stdout, output(recovered)
    assert [(e["event"], e["action"]) for _, _, e in webhook.received] == [("recovered", "env")], webhook.received
    assert files(deployed) == before
    key = ssh(deployed, "app1", "cat /srv/app/shared/env.key").stdout.strip().encode()
    restored = ssh(deployed, "app1", "cat /srv/app/shared/env").stdout
    assert "APP_Y" not in restored and health(deployed, "app1")["env_digest"] == digest(restored.encode(), key), \
        "the app runs on the old file again"
