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


def shown_once(project, argv: list[str], *lines: tuple[str, str], seconds: float = 15) -> str:
    """`fab ARGV`'s output once it has, for each (start, words), a line that starts so and has
    the words (journald writes what it gets within moments, not at once)."""
    deadline = time.monotonic() + seconds
    while True:
        proc = project.fab(*argv, db=False)
        assert proc.returncode == 0, output(proc)
        found = proc.stdout.splitlines()
        if all(any(line.startswith(start) and words in line for line in found) for start, words in lines):
            return proc.stdout
        assert time.monotonic() < deadline, (lines, proc.stdout[-3000:])
        time.sleep(0.5)


def test_logs_show_each_app_host_s_journal_with_its_name_one_host_alone_and_the_backup_units(deployed):
    visit(deployed, "app1", "/marker-one")
    visit(deployed, "app2", "/marker-two")
    both = shown_once(deployed, ["logs", "--lines", "100"], ("app1 | ", "/marker-one"), ("app2 | ", "/marker-two"))
    assert both.index("/marker-one") < both.index("/marker-two"), "merged by time"
    one = deployed.fab("logs", "--host", "app2", "--since", "1 hour ago", db=False)
    assert one.returncode == 0 and "/marker-two" in one.stdout and "app1 |" not in one.stdout, output(one)
    assert "no host 'db' runs the app units" in assert_clean_failure(deployed.fab("logs", "--host", "db", db=False))
    bad = assert_clean_failure(deployed.fab("logs", "--since", "not a time", db=False))
    assert "journalctl exited" in bad, bad
    assert deployed.fab("setup", db=False).returncode == 0  # the backup units
    in_host(deployed.sandbox.find("app1"), ["systemctl", "start", "app-backup-check.service"])
    shown_once(deployed, ["logs", "--unit", "backup"], ("app1 | ", "app-backup-check"))
    assert "--unit must be app or backup" in assert_clean_failure(deployed.fab("logs", "--unit", "web", db=False))


def test_logs_follow_prints_new_lines_as_they_come_and_ctrl_c_stops_every_host_s_journalctl(deployed):
    env = dict(os.environ, NO_COLOR="1")
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "fabric", "logs", "--follow"], cwd=deployed.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(pids_running(deployed.sandbox, "journalctl", "--follow")) < 2 and time.monotonic() < deadline:
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
    assert pids_running(deployed.sandbox, "journalctl", "--follow") == []

