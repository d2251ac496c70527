"""Faults injected for real during `fab deploy` on the sandbox fleet: the controller
killed or interrupted at each step, a host's network cut, the database stopped, a
full disk, two deploys at once. Each must end with the old release serving, the
database as it was (revision and rows), the lock released or recoverable, and a
message that says what happened and what to run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import assert_clean_failure, output
from test_deploy import (GOOD_MIGRATION, HEAD, SLOW_MIGRATION, add_migration, assert_serving, current, deploy,
                         deploy_and_seed, run_until, sql, ssh)

from deploy.sandbox import faults

pytestmark = pytest.mark.timeout(300)
@pytest.fixture
def deployed(staged):
    """The seed commit deployed and healthy on the test fleet, with two boards."""
    return deploy_and_seed(staged, "kept", "also kept")


STEPS = ["preflight", "build", "backup", "migrate", "switch", "finish"]
BOARDS = "SELECT string_agg(name, ',' ORDER BY id) FROM boards"


def assert_as_before(project) -> None:
    """The old release serves on every app host at the old revision, with the old rows, unlocked."""
    assert sql(project, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(project, BOARDS) == "kept,also kept"
    assert sql(project, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == "0"
    assert_serving(project, project.first_release, HEAD)
    status = json.loads(project.fab("status", "--json", db=False).stdout)
    assert status["lock"] is None and status["interrupted"] is None, status


@pytest.mark.parametrize("step", STEPS)
def test_a_controller_killed_at_each_step_is_detected_and_recovered(deployed, step):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, f"-> {step}", ["deploy"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    status = deployed.fab("status", db=False)
    assert "INTERRUPTED" in status.stdout and f"stopped at step '{step}'" in status.stdout, output(status)
    refused = assert_clean_failure(deploy(deployed))
    assert "an earlier deploy was interrupted" in refused and "fab recover" in refused
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert_as_before(deployed)
    again = deploy(deployed)
    assert again.returncode == 0, output(again)


@pytest.mark.parametrize("step", STEPS)
def test_ctrl_c_at_each_step_undoes_everything_and_exits_130(deployed, step):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, f"-> {step}", ["deploy"])
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    text = "".join(proc.seen) + rest
    assert proc.returncode == 130, text
    assert f"step '{step}' failed: interrupted (Ctrl-C)" in text and "Traceback" not in text, text
    assert_as_before(deployed)
    entry = json.loads(ssh(deployed, "app1", "tail -1 /srv/app/deploy.log").stdout)
    assert entry["outcome"] == "failed" and entry["error"] == "interrupted (Ctrl-C)", entry


def test_two_deploys_started_at_the_same_moment_exactly_one_runs(deployed):
    env = dict(os.environ, NO_COLOR="1")
    env.pop("DATABASE_URL", None)
    procs = [subprocess.Popen([sys.executable, "-m", "fabric", "deploy"], cwd=deployed.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    results = [(p.wait(timeout=180), p.stdout.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(text for code, text in results if code == 1)
    assert "is locked by" in loser and "Traceback" not in loser, loser
    winner = next(text for code, text in results if code == 0)
    release = winner.split("ok: deployed ")[1].split()[0]
    assert current(deployed, "app1") == current(deployed, "app2") == release
    assert json.loads(deployed.fab("status", "--json", db=False).stdout)["lock"] is None


def change_dependencies(project) -> None:
    """A new lock file hash: the build installs a new environment on every host (seconds of work)."""
    with open(project.root / "requirements" / "app.lock", "a") as lock:
        lock.write("# a changed lock file: a new environment\n")
    project.commit_all("change the lock")
    project.push()


def test_a_host_cut_off_during_the_build_fails_the_deploy_before_anything_switched(deployed):
    change_dependencies(deployed)
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> build", ["deploy"])
    faults.apply(deployed.sandbox, "app2", "cut-network")
    try:
        rest = proc.communicate(timeout=180)[0]
    finally:
        faults.apply(deployed.sandbox, "app2", "restore-network")
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert "step 'build' failed" in text and "app2" in text, text
    if "NOT undone" in text:  # app2's release could not be marked failed while it was cut off
        assert "fab recover --stage sandbox" in text
        recovered = deployed.fab("recover", db=False)
        assert recovered.returncode == 0, output(recovered)
    assert_as_before(deployed)


def test_the_migrations_host_cut_off_during_the_migration_is_recovered_once_it_is_back(deployed):
    add_migration(deployed, SLOW_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> migrate", ["deploy"])
    time.sleep(1.0)  # inside the migration's transaction
    faults.apply(deployed.sandbox, "app1", "cut-network")
    try:
        rest = proc.communicate(timeout=180)[0]
    finally:
        faults.apply(deployed.sandbox, "app1", "restore-network")
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert "step 'migrate' failed" in text and "app1" in text and "fab recover --stage sandbox" in text, text
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert_as_before(deployed)


def test_the_database_stopped_during_the_migration_leaves_it_as_it_was_once_started(deployed):
    add_migration(deployed, SLOW_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> migrate", ["deploy"])
    time.sleep(1.0)
    faults.apply(deployed.sandbox, "db", "stop-db")
    try:
        rest = proc.communicate(timeout=180)[0]
    finally:
        faults.apply(deployed.sandbox, "db", "start-db")
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert "step 'migrate' failed" in text, text
    if "NOT undone" in text:  # the database was down while the undo ran: recover finishes it
        assert "fab recover --stage sandbox" in text
        recovered = deployed.fab("recover", db=False)
        assert recovered.returncode == 0, output(recovered)
    assert_as_before(deployed)


def test_the_database_stopped_during_the_backup_stops_the_deploy_before_migrating(deployed):
    from test_backup_checks import Holding, wait_for_lock_waiter

    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    backups = ssh(deployed, "app1", "ls -A /srv/app/backups").stdout
    holding = Holding(deployed, "boards")  # the dump waits on this lock: the database stops meanwhile
    proc = run_until(deployed, "-> backup", ["deploy"])
    wait_for_lock_waiter(deployed)
    faults.apply(deployed.sandbox, "db", "stop-db")
    try:
        rest = proc.communicate(timeout=180)[0]
    finally:
        faults.apply(deployed.sandbox, "db", "start-db")
        holding.proc.kill()  # its session ended with the server
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert "step 'backup' failed" in text and "-> migrate" not in text, text
    assert ssh(deployed, "app1", "ls -A /srv/app/backups").stdout == backups  # nothing partial left
    assert_as_before(deployed)


def test_a_full_disk_during_the_build_fails_the_deploy_and_leaves_the_old_release(deployed):
    change_dependencies(deployed)  # the build uploads wheels and installs an environment: seconds of writes
    proc = run_until(deployed, "-> build", ["deploy"])
    faults.apply(deployed.sandbox, "app2", "fill-disk")
    try:
        rest = proc.communicate(timeout=180)[0]
    finally:
        faults.apply(deployed.sandbox, "app2", "free-disk")
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert "step 'build' failed" in text and "No space left on device" in text, text
    if "NOT undone" in text:  # app2's release could not be marked failed on a full disk
        recovered = deployed.fab("recover", db=False)
        assert recovered.returncode == 0, output(recovered)
    assert_as_before(deployed)


def test_a_host_without_the_free_space_the_stage_asks_for_is_refused_before_anything_changes(deployed):
    faults.apply(deployed.sandbox, "app2", "fill-disk")
    try:
        text = assert_clean_failure(deploy(deployed))
    finally:
        faults.apply(deployed.sandbox, "app2", "free-disk")
    assert "step 'preflight' failed" in text and "app2: only" in text and "min_free_mb" in text, text
    assert_as_before(deployed)


def test_a_migration_waiting_on_a_lock_times_out_rolls_back_and_reads_never_stall_longer(deployed):
    deployed.edit("deploy.toml", 'lock_timeout = "5s"', 'lock_timeout = "1s"')
    deployed.commit_all("a short lock timeout")
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")  # ALTER TABLE boards: ACCESS EXCLUSIVE
    reader = subprocess.Popen(  # a long transaction that has read boards (ACCESS SHARE, idle in transaction)
        ["ssh", "-F", str(deployed.sandbox.ssh_config), "app1",
         'set -a && . /srv/app/shared/env && exec psql "$DATABASE_URL" -Xq'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader.stdin.write("BEGIN; SELECT count(*) FROM boards; SELECT 'reading';\n")
    reader.stdin.flush()
    while "reading" not in reader.stdout.readline():
        pass
    slowest, failures, stop = [0.0], [], [False]

    def read_boards() -> None:
        while not stop[0]:
            started = time.monotonic()
            try:
                urllib.request.urlopen(f"http://{deployed.sandbox.apps[0].address}:8000/boards", timeout=30).read()
            except Exception as exc:  # a failed request, whatever its kind
                failures.append(repr(exc))
            slowest[0] = max(slowest[0], time.monotonic() - started)

    load = threading.Thread(target=read_boards)
    load.start()
    try:
        proc = deploy(deployed)
    finally:
        stop[0] = True
        load.join(timeout=60)
        reader.stdin.write("COMMIT;\n\\q\n")
        reader.stdin.close()
        reader.wait(timeout=30)
    text = assert_clean_failure(proc)
    assert "step 'migrate' failed" in text and "lock timeout" in text, text
    assert failures == [] and slowest[0] < 3, (failures[:3], slowest[0])  # held up at most ~lock_timeout
    assert_as_before(deployed)
