"""`fab logs`: every app host's journal, each line named by its host, merged or followed
until Ctrl-C; the backup units' journal too. On the sandbox fleet's real journald."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import pids_running

from deploy.sandbox.system import in_host

pytestmark = pytest.mark.timeout(240)


def visit(project, host: str, path: str) -> None:
    """A request straight to one app host (its access log line names `path`)."""
    address = project.sandbox.find(host).address
    try:
        urllib.request.urlopen(f"http://{address}:8000{path}", timeout=5).read()
    except urllib.error.HTTPError:
        pass  # a 404 is logged all the same


def test_logs_show_each_app_host_s_journal_with_its_name_one_host_alone_and_the_backup_units(deployed):
    visit(deployed, "app1", "/marker-one")
    visit(deployed, "app2", "/marker-two")
    time.sleep(1)  # journald writes the lines it got
    both = deployed.fab("logs", "--lines", "100", db=False)
    assert both.returncode == 0, output(both)
    assert any(line.startswith("app1 | ") and "/marker-one" in line for line in both.stdout.splitlines()), both.stdout
    assert any(line.startswith("app2 | ") and "/marker-two" in line for line in both.stdout.splitlines()), both.stdout
    one = deployed.fab("logs", "--host", "app2", "--since", "1 hour ago", db=False)
    assert one.returncode == 0 and "/marker-two" in one.stdout and "app1 |" not in one.stdout, output(one)
    assert "no host 'db' runs the app units" in assert_clean_failure(deployed.fab("logs", "--host", "db", db=False))
    bad = assert_clean_failure(deployed.fab("logs", "--since", "not a time", db=False))
    assert "journalctl exited" in bad, bad
    assert deployed.fab("setup", db=False).returncode == 0  # the backup units
    in_host(deployed.sandbox.find("app1"), ["systemctl", "start", "app-backup-check.service"])
    shown = deployed.fab("logs", "--unit", "backup", db=False)
    assert shown.returncode == 0, output(shown)
    assert any(line.startswith("app1 | ") and "app-backup-check" in line for line in shown.stdout.splitlines()), \
        shown.stdout
    assert "--unit must be app or backup" in assert_clean_failure(deployed.fab("logs", "--unit", "web", db=False))


def test_logs_follow_prints_new_lines_as_they_come_and_ctrl_c_stops_every_host_s_journalctl(deployed):
    env = dict(os.environ, NO_COLOR="1")
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "fabric", "logs", "--follow"], cwd=deployed.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(pids_running("journalctl", "--follow")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        visit(deployed, "app2", "/followed-marker")
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "/followed-marker" in line:
                break
        assert seen[-1].startswith("app2 | "), "".join(seen)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, proc.stdout.read()
    finally:
        proc.kill()
    assert "Traceback" not in proc.stdout.read()
    assert pids_running("journalctl", "--follow") == []

