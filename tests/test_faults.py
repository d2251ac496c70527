"""Faults injected for real during `fab deploy` on the sandbox fleet: the controller
killed or interrupted at each step, a host's network cut, the migration process killed
on its host, the database stopped, a full disk, a downgrade that fails, two deploys at
once. Each must end with the old release serving, the
database as it was (revision and rows), the lock released or recoverable, and a
message that says what happened and what to run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import (BOARDS, GOOD_MIGRATION, HEAD, IRREVERSIBLE, SLOW_MIGRATION, add_migration, assert_serving,
                           break_the_app, command_lines, current, deploy, health, Holding, in_the_migration, Load,
                           pids_running, run_until, sql, ssh, wait_for_lock_waiter)

from bench.scratch import add_column_migration
from deploy.sandbox import faults
from deploy.sandbox.system import in_host, leader

pytestmark = pytest.mark.timeout(300)

STEPS = ["preflight", "build", "backup", "migrate", "switch", "finish"]


def assert_as_before(project) -> None:
    """The old release serves on every app host at the old revision, with the old rows, unlocked."""
    assert sql(project, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(project, BOARDS) == "kept,also kept"
    assert sql(project, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == "0"
    assert_serving(project, project.first_release, HEAD)
    status = json.loads(project.fab("status", "--json", db=False).stdout)
    assert status["lock"] is None and status["interrupted"] is None, status


def release_of(proc) -> str:
    """The release id a running `fab deploy` announced in its preflight."""
    return re.search(r"; release (\S+);", "".join(proc.seen)).group(1)


def wait_until_switched(project, host: str, release: str) -> None:
    """Until the host's `current` link points at `release` (watched on the host itself, every 10 ms)."""
    watch = f'until [ "$(readlink /srv/app/current)" = releases/{release} ]; do sleep 0.01; done'
    in_host(project.sandbox.find(host), ["timeout", "60", "sh", "-c", watch])


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
    assert "NOT undone" not in text and "could not" not in text, text  # all undone at once: no recover needed
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


def deploy_hit_by(project, step: str, host: str, fault: str, undo: str | None, before_fault=lambda: None) -> str:
    """`fab deploy` with `fault` applied on `host` once `step` began (and `before_fault` ran),
    undone when the deploy has ended; its output, after checking it failed cleanly."""
    proc = run_until(project, f"-> {step}", ["deploy"])
    before_fault()
    faults.apply(project.sandbox, host, fault)
    try:
        rest = proc.communicate(timeout=180)[0]
    finally:
        if undo:
            faults.apply(project.sandbox, host, undo)
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert f"step '{step}' failed" in text, text
    return text


def recover_if_not_undone(project, text: str) -> None:
    """An undo that could not finish while the fault lasted names `fab recover`, which finishes it."""
    if "NOT undone" in text:
        assert "fab recover --stage sandbox" in text, text
        recovered = project.fab("recover", db=False)
        assert recovered.returncode == 0, output(recovered)


def test_a_host_cut_off_during_the_build_fails_the_deploy_before_anything_switched(deployed):
    change_dependencies(deployed)
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    text = deploy_hit_by(deployed, "build", "app2", "cut-network", "restore-network")
    assert "app2" in text, text
    recover_if_not_undone(deployed, text)  # app2's release could not be marked failed while it was cut off
    assert_as_before(deployed)


def wait_for_health(project, host: str, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return health(project, host)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_rebooted_app_host_serves_its_current_release_again_by_itself(deployed):
    host = deployed.sandbox.find("app2")
    before = leader(host)
    assert "rebooted" in faults.apply(deployed.sandbox, "app2", "reboot")
    assert leader(host) not in (None, before)  # a new PID 1: the host booted again
    assert wait_for_health(deployed, "app2")["release"] == deployed.first_release
    assert ssh(deployed, "app2", "systemctl is-active app.service").stdout.strip() == "active"
    assert_serving(deployed, deployed.first_release, HEAD)


def running_in(project, host: str, *words: str, seconds: float = 60) -> None:
    """Until a process on `host` has all `words` in its command line."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(all(w in line for w in words) for line in command_lines([project.sandbox.find(host)]).values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing ran {' '.join(words)} on {host}")


def test_an_app_host_rebooted_during_the_build_fails_the_deploy_and_serves_the_old_release(deployed):
    change_dependencies(deployed)
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    text = deploy_hit_by(deployed, "build", "app2", "reboot", None,
                         lambda: running_in(deployed, "app2", "bin/pip", "install"))  # a command in flight
    assert "app2" in text, text
    recover_if_not_undone(deployed, text)
    wait_for_health(deployed, "app2")
    assert_as_before(deployed)


def test_the_migrations_host_rebooted_during_the_migration_is_recovered(deployed):
    add_migration(deployed, SLOW_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    text = deploy_hit_by(deployed, "migrate", "app1", "reboot", None, lambda: in_the_migration(deployed))
    assert "app1" in text, text
    recover_if_not_undone(deployed, text)
    wait_for_health(deployed, "app1")
    assert_as_before(deployed)


def test_the_migrations_host_cut_off_during_the_migration_is_recovered_once_it_is_back(deployed):
    add_migration(deployed, SLOW_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    text = deploy_hit_by(deployed, "migrate", "app1", "cut-network", "restore-network",
                         lambda: in_the_migration(deployed))
    assert "app1" in text and "fab recover --stage sandbox" in text, text
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert_as_before(deployed)


def test_the_database_stopped_during_the_migration_leaves_it_as_it_was_once_started(deployed):
    add_migration(deployed, SLOW_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    text = deploy_hit_by(deployed, "migrate", "db", "stop-db", "start-db", lambda: in_the_migration(deployed))
    recover_if_not_undone(deployed, text)  # the database was down while the undo ran
    assert_as_before(deployed)


def test_the_database_stopped_during_the_backup_stops_the_deploy_before_migrating(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    backups = ssh(deployed, "app1", "ls -A /srv/app/backups").stdout
    holding = Holding(deployed, "boards")  # the dump waits on this lock: the database stops meanwhile
    try:
        text = deploy_hit_by(deployed, "backup", "db", "stop-db", "start-db", lambda: wait_for_lock_waiter(deployed))
    finally:
        holding.proc.kill()  # its session ended with the server
    assert "-> migrate" not in text, text
    assert ssh(deployed, "app1", "ls -A /srv/app/backups").stdout == backups  # nothing partial left
    assert_as_before(deployed)


def test_a_full_disk_during_the_build_fails_the_deploy_and_leaves_the_old_release(deployed):
    change_dependencies(deployed)  # the build uploads wheels and installs an environment: seconds of writes
    text = deploy_hit_by(deployed, "build", "app2", "fill-disk", "free-disk")
    assert "No space left on device" in text, text
    recover_if_not_undone(deployed, text)  # app2's release could not be marked failed on a full disk
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
    reader = Holding(deployed, "boards", "ACCESS SHARE")  # a long transaction that has read boards
    load = Load([f"http://{deployed.sandbox.apps[0].address}:8000/boards"])
    load.start()
    try:
        proc = deploy(deployed)
    finally:
        load.stop()
        reader.release()
    text = assert_clean_failure(proc)
    assert "step 'migrate' failed" in text and "lock timeout" in text, text
    assert load.failures == [] and load.slowest < 3, (load.failures[:3], load.slowest)  # held up at most ~lock_timeout
    assert_as_before(deployed)


def test_a_controller_killed_after_a_host_switched_is_recovered_with_the_code_and_the_database(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> switch", ["deploy"])
    wait_until_switched(deployed, "app1", release_of(proc))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert sql(deployed, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"  # migrated, then killed

    status = deployed.fab("status", db=False)
    assert "INTERRUPTED" in status.stdout and "stopped at step 'switch'" in status.stdout
    refused = assert_clean_failure(deploy(deployed))
    assert "an earlier deploy was interrupted" in refused and "fab recover" in refused

    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert "switched back on app1" in recovered.stdout, output(recovered)
    assert_as_before(deployed)
    assert deploy(deployed).returncode == 0


def test_a_migration_process_killed_on_the_host_is_undone_and_its_orphaned_session_ended(deployed):
    before = sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards")
    # The sandbox's PostgreSQL ends a gone client's session by itself within a second
    # (client_connection_check_interval); PostgreSQL's default never does. Off, as by default, so
    # that the session outlives its client until the deploy ends it.
    sql(deployed, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET client_connection_check_interval = 0', "
                  "current_database()); END $$")
    add_migration(deployed, SLOW_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> migrate", ["deploy"])
    in_the_migration(deployed)
    pids = pids_running(deployed.sandbox, ".venv/bin/python -m flask", " db upgrade")
    assert pids, "no migration process on the fleet"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    rest = proc.communicate(timeout=120)[0]
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert "step 'migrate' failed" in text and "the migration process on app1 was killed" in text
    assert "orphaned database session" in text
    assert "database untouched at " + HEAD in text
    # the killed client's transaction is gone: boards is not locked, the column is not there
    locked = sql(deployed, "SET lock_timeout = '2s'; SELECT string_agg(name, ',' ORDER BY id) FROM boards")
    assert locked.splitlines()[-1] == before
    assert sql(deployed, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == "0"
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert_serving(deployed, deployed.first_release, HEAD)
    assert json.loads(deployed.fab("status", "--json", db=False).stdout)["lock"] is None


def test_a_host_cut_off_after_its_switch_is_reported_and_recover_switches_it_back(deployed):
    """app2 switched, then lost: the deploy's own undo cannot reach it and goes on to undo
    the migration and the build; recover must still switch app2 back (the journal's last
    step is then 'build', but the deploy had reached 'switch')."""
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> switch", ["deploy"])
    release = release_of(proc)
    wait_until_switched(deployed, "app2", release)
    faults.apply(deployed.sandbox, "app2", "cut-network")  # during its reload and health check
    rest = proc.communicate(timeout=180)[0]
    assert proc.returncode == 1, "".join(proc.seen) + rest
    assert "app2" in rest and "NOT undone: switch" in rest and "fab recover --stage sandbox" in rest
    assert current(deployed, "app1") == deployed.first_release
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    faults.apply(deployed.sandbox, "app2", "restore-network")
    assert current(deployed, "app2") == release
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert "having reached 'switch'" in recovered.stdout and "switched back on app2" in recovered.stdout
    for host in ("app1", "app2"):
        assert current(deployed, host) == deployed.first_release
        assert health(deployed, host)["release"] == deployed.first_release


def test_a_failed_downgrade_restores_the_predeploy_backup_when_nothing_was_written_since(deployed):
    add_migration(deployed, IRREVERSIBLE, "a0d0a0d0beef_add_a_note.py")
    break_the_app(deployed)
    text = assert_clean_failure(deploy(deployed))
    assert "step 'switch' failed" in text and "restored from the pre-deploy backup" in text
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards") == "kept,also kept"
    assert_serving(deployed, deployed.first_release, HEAD)


def test_a_failed_downgrade_restores_when_only_the_migrations_own_backfill_wrote_since_the_backup(deployed):
    backfill = add_column_migration("a0d0a0d0beef", HEAD, "note", "add a note",
                                    then="op.execute(\"UPDATE boards SET note = 'the migration backfilled it'\")",
                                    downgrade='raise RuntimeError("this migration cannot be undone")')
    add_migration(deployed, backfill, "a0d0a0d0beef_add_a_note.py")
    break_the_app(deployed)
    text = assert_clean_failure(deploy(deployed))
    assert "restored from the pre-deploy backup" in text, text
    safety = re.search(r"safety backup (\S+-before-restore)", text).group(1)
    assert safety in ssh(deployed, "app1", "tail -1 /srv/app/deploy.log").stdout
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(deployed, BOARDS) == "kept,also kept"
    assert_serving(deployed, deployed.first_release, HEAD)


def test_rows_written_while_the_restore_fallback_runs_survive_and_the_deploy_says_what_to_run(deployed):
    add_migration(deployed, IRREVERSIBLE, "a0d0a0d0beef_add_a_note.py")
    break_the_app(deployed)
    # Holding the backups folder's lock pauses the fallback inside its verification (pinning the
    # backup waits for it): every writer stopped, the first proof passed, pg_restore not yet run.
    paused = subprocess.Popen(["ssh", "-F", str(deployed.sandbox.ssh_config), "app1",
                               "exec flock /srv/app/backups/.backups.lock sleep 120"])
    try:
        proc = run_until(deployed, "  restore: verify", ["deploy"])
        sql(deployed, "INSERT INTO boards (name) VALUES ('written during the fallback')")  # a writer nobody stopped
    finally:
        ssh(deployed, "app1", "pkill -f 'sleep 120'")
        paused.wait(timeout=30)
    rest = proc.communicate(timeout=180)[0]
    text = "".join(proc.seen) + rest
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert "was not restored" in text and "public.boards" in text, text
    assert "fab restore --stage sandbox " in text, text
    assert sql(deployed, BOARDS) == "kept,also kept,written during the fallback"
    assert sql(deployed, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"  # left for a person
