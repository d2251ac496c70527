"""The app behind a real HAProxy with active health checks, as users' traffic arrives:
what the load balancer asks never takes a healthy old release out of rotation, and
a host that cannot serve is taken out."""
from __future__ import annotations

import os
import shlex
import signal
import time

import pytest
from conftest import output
from fleet_helpers import (GOOD_MIGRATION, HEAD, add_migration, assert_serving, break_the_app, deploy, in_rotation,
                           Load, run_until, sql, ssh, through_lb)

from deploy.sandbox import lbhost
from deploy.templates import release_files

pytestmark = pytest.mark.timeout(300)


def status_code(project, host: str, path: str) -> int:
    """The HTTP status the app on `host` answers `path` with, asked from the host itself."""
    code = ("import sys, urllib.request, urllib.error\n"
            "try: print(urllib.request.urlopen(sys.argv[1], timeout=5).status)\n"
            "except urllib.error.HTTPError as e: print(e.code)")
    proc = ssh(project, host, shlex.join(["python3", "-c", code, f"http://127.0.0.1:8000{path}"]))
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_the_old_release_stays_in_rotation_while_the_database_is_ahead_of_it(deployed):
    """Between the migration and the switch the database is ahead of the serving code: its
    /healthz says 503 (not at this code's revision), and a load balancer asking that would
    take every host out. The window is held open here for longer than HAProxy's check
    needs to mark a host down (2 checks, 1 s apart)."""
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    load = Load(through_lb(deployed, "/boards"))
    taken_out = {name: s["chkdown"] for name, s in in_rotation(deployed).items()}  # e.g. by the last reset
    load.start()
    try:
        running = run_until(deployed, "-> switch", ["deploy"])
        os.kill(running.pid, signal.SIGSTOP)  # the database is at the new revision; the old code serves
        try:
            assert sql(deployed, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"
            assert status_code(deployed, "app1", "/healthz") == 503  # what the deploy asks
            assert status_code(deployed, "app1", "/livez") == 200    # what the load balancer asks
            time.sleep(4)
        finally:
            os.kill(running.pid, signal.SIGCONT)
        text = "".join(running.seen) + running.communicate(timeout=240)[0]
    finally:
        load.stop()
    assert running.returncode == 0, text
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:3])
    servers = lbhost.servers(deployed.sandbox.lb)
    assert {name: s["chkdown"] for name, s in servers.items()} == taken_out  # no host was taken out


def test_a_host_whose_database_is_unreachable_is_taken_out_and_the_other_serves_every_request(deployed):
    before = in_rotation(deployed)
    broken = ssh(deployed, "app2", "sed -i 's/@/@nowhere-/' /srv/app/shared/env && sudo -n systemctl restart app.service")
    assert broken.returncode == 0, broken.stderr
    deadline = time.monotonic() + 20
    while lbhost.servers(deployed.sandbox.lb)["app2"]["status"] != "DOWN":
        assert time.monotonic() < deadline, lbhost.servers(deployed.sandbox.lb)["app2"]
        time.sleep(0.2)
    load = Load([deployed.sandbox.lb_url + "boards"])
    load.start()
    time.sleep(2)
    load.stop()
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:3])
    assert lbhost.servers(deployed.sandbox.lb)["app1"]["status"] == "UP"
    assert int(lbhost.servers(deployed.sandbox.lb)["app2"]["chkdown"]) == int(before["app2"]["chkdown"]) + 1
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD


def main_pid(project, host: str) -> int:
    return int(ssh(project, host, "systemctl show --property=MainPID --value app.service").stdout)


def deploy_under_load(project, *args: str):
    """`fab deploy` while users' requests go through the load balancer; its result and the load."""
    load = Load(through_lb(project, "/boards"))
    load.start()
    try:
        return deploy(project, *args), load
    finally:
        load.stop()


def switch_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "; healthy on " in line]


def test_a_changed_unit_restarts_each_host_in_turn_drained_at_the_load_balancer_without_a_failed_request(deployed):
    own = release_files("app:create_app", "/healthz", "/livez", "app")[".deploy/gunicorn.conf.py"]
    (deployed.root / "gunicorn_prod.conf.py").write_text(own)  # the project's own config, from then on
    deployed.edit("deploy.toml", 'models = ["app/models.py"]', 'models = ["app/models.py"]\ngunicorn_config = "gunicorn_prod.conf.py"')
    deployed.commit_all("serve with another gunicorn config")
    deployed.push()
    setup = deployed.fab("setup", db=False)
    assert setup.returncode == 0, output(setup)
    assert output(setup).count("app.service changed: the next deploy restarts the app on this host "
                               "(drained at the load balancer first)") == 2, output(setup)
    masters = {h: main_pid(deployed, h) for h in ("app1", "app2")}
    proc, load = deploy_under_load(deployed)
    assert proc.returncode == 0, output(proc)
    lines = switch_lines(proc.stdout)
    assert [line.split("]")[0] for line in lines] == ["[app1", "[app2"]  # one at a time: the other serves
    assert all("restarted (the app's unit file changed (fab setup)), drained at the load balancer" in line
               for line in lines), lines
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:3])
    assert all(main_pid(deployed, h) not in (0, masters[h]) for h in masters)  # a new master on each
    assert {s["status"] for s in lbhost.servers(deployed.sandbox.lb).values()} == {"UP"}
    assert ssh(deployed, "app1", "test -e /srv/app/shared/restart-needed").returncode == 1
    again = deploy(deployed)  # nothing changed since: a graceful reload, nobody drained
    assert again.returncode == 0 and "drained" not in again.stdout and "reloaded;" in again.stdout, output(again)


GUNICORN_23 = """gunicorn==23.0.0 \\
    --hash=sha256:ec400d38950de4dfd418cff8328b2c8faed0edb0d517d3394e457c317908ca4d
packaging==26.3 \\
    --hash=sha256:d7193f7c8e4e93f444fde0262bf90af30e16fa0ad0ad44cb553c87339b23cd1c
"""


def test_a_new_gunicorn_version_restarts_the_hosts_drained_which_a_reload_could_not_load(deployed):
    lock = deployed.root / "requirements" / "app.lock"
    text = lock.read_text()
    start = text.index("gunicorn==")
    end = text.index("    # via", start)
    lock.write_text(text[:start] + GUNICORN_23 + text[end:])
    deployed.commit_all("gunicorn 23")
    deployed.push()
    proc, load = deploy_under_load(deployed)
    assert proc.returncode == 0, output(proc)
    lines = switch_lines(proc.stdout)
    assert len(lines) == 2 and all("restarted (gunicorn 27.0.1 -> 23.0.0), drained" in line for line in lines), lines
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:3])
    served = ssh(deployed, "app1", "cat /proc/$(systemctl show --property=MainPID --value app.service)/cmdline "
                                   "| tr '\\0' ' '; ls /srv/app/current/.venv/lib/python3*/site-packages | grep gunicorn-")
    assert "gunicorn-23.0.0.dist-info" in served.stdout, served.stdout


def test_batches_drain_each_host_and_a_failed_switch_puts_every_host_back_in_rotation(deployed):
    break_the_app(deployed)
    proc, load = deploy_under_load(deployed, "--batch", "1")
    text = output(proc)
    assert proc.returncode == 1 and "step 'switch' failed" in text, text
    assert "put app1 back in the load balancer's rotation" in text or "switched back on app1" in text, text
    assert load.failures == [] and load.ok > 5, (load.ok, load.failures[:3])  # app1 was out while it failed
    assert {name: s["status"] for name, s in in_rotation(deployed).items()} == {"app1": "UP", "app2": "UP"}
    assert_serving(deployed, deployed.first_release, HEAD)
