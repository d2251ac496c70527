"""When the tool itself fails: a deploy that succeeded is never undone; an unfinished one
is seen from every controller; a command the controller gives up on stops on its host.
On the sandbox fleet, with `fab` run as a user runs it."""
from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import (GOOD_MIGRATION, HEAD, SLOW_MIGRATION, add_migration, assert_serving, current, deploy,
                           pids_running, run_until, sql, ssh)

from deploy.config import load_project
from deploy.ssh.connection import HostError, connect, on_hosts
from deploy.stages import load_stage

pytestmark = pytest.mark.timeout(300)
NEW = "a0d0a0d0beef"
COMMITTED = "  recorded as succeeded"


def status(project) -> dict:
    return json.loads(project.fab("status", "--json", db=False).stdout)


def assert_new_release_kept(project, release: str) -> None:
    """The release that succeeded serves, at the new revision, marked good."""
    assert_serving(project, release, NEW)
    meta = json.loads(ssh(project, "app1", f"cat /srv/app/releases/{release}/.release.json").stdout)
    assert meta["status"] == "good", meta


def test_a_controller_killed_right_after_the_deploy_succeeded_is_never_rolled_back(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, COMMITTED, ["deploy"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    release = current(deployed, "app1")
    assert release != deployed.first_release
    state = status(deployed)
    assert state["interrupted"] is None, state
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert "nothing to recover" in recovered.stdout and "succeeded" in recovered.stdout, output(recovered)
    assert_new_release_kept(deployed, release)
    assert status(deployed)["lock"] is None
    again = deploy(deployed)
    assert again.returncode == 0, output(again)


def test_ctrl_c_right_after_the_deploy_succeeded_undoes_nothing_and_releases_the_lock(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, COMMITTED, ["deploy"])
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    text = "".join(proc.seen) + rest
    assert proc.returncode == 0 and "nothing was undone" in text and "undoing" not in text, text
    release = current(deployed, "app1")
    assert_new_release_kept(deployed, release)
    state = status(deployed)
    assert state["interrupted"] is None and state["lock"] is None, state
    entry = json.loads(ssh(deployed, "app1", "tail -1 /srv/app/deploy.log").stdout)
    assert entry["outcome"] == "ok" and entry["release"] == release


def test_a_failure_after_the_deploy_succeeded_is_reported_and_not_undone(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    ssh(deployed, "app1", "mv /srv/app/deploy.log /srv/app/deploy.log.kept && mkdir /srv/app/deploy.log")
    try:
        proc = deploy(deployed)
    finally:
        ssh(deployed, "app1", "rmdir /srv/app/deploy.log && mv /srv/app/deploy.log.kept /srv/app/deploy.log")
    text = output(proc)
    assert proc.returncode == 0 and "deployed, but could not write the deploy log" in text, text
    assert_new_release_kept(deployed, current(deployed, "app1"))
    state = status(deployed)
    assert state["interrupted"] is None and state["lock"] is None, state


def as_other_controller(project, heartbeat_age: str | None, host: str | None = None) -> None:
    """Make the journal (and the lock, if any) look written by another machine: the same
    hostname unless `host` is given, with a pid that is alive here; its heartbeat
    `heartbeat_age` old (touch -d)."""
    edit = ("import json, os, sys\n"
            "for path in sys.argv[1:]:\n"
            "    if not os.path.exists(path): continue\n"
            "    record = json.load(open(path))\n"
            "    holder = record if path.endswith('holder.json') else record['holder']\n"
            f"    holder.update(machine='another-laptop', pid={os.getpid()})\n"
            + (f"    holder.update(host={host!r})\n" if host else "")
            + "    json.dump(record, open(path, 'w'))\n")
    touch = f" && touch -d '{heartbeat_age}' /srv/app/.lock/heartbeat" if heartbeat_age else ""
    proc = ssh(project, "app1", f"python3 -c {shlex.quote(edit)} /srv/app/.journal.json /srv/app/.lock/holder.json"
                                + touch)
    assert proc.returncode == 0, proc.stderr


def test_an_unfinished_deploy_of_another_controller_is_shown_refused_and_recovered_only_once_it_is_dead(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> switch", ["deploy"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    as_other_controller(deployed, "now")  # its heartbeat is fresh: it runs elsewhere
    assert status(deployed)["interrupted"] is None
    refused = assert_clean_failure(deployed.fab("recover", db=False))
    assert "still running" in refused, refused
    assert ssh(deployed, "app1", "test -d /srv/app/.lock").returncode == 0  # a live lock is never removed

    as_other_controller(deployed, "2 minutes ago")  # no heartbeat for longer than STALE_SECONDS: dead
    state = deployed.fab("status", db=False)
    assert "INTERRUPTED" in state.stdout and "no longer running" in state.stdout, output(state)
    for argv in (["deploy"], ["rollback"], ["restore", "20260101000000-manual"]):
        refused = assert_clean_failure(deployed.fab(*argv, db=False))
        assert "was interrupted" in refused and "fab recover --stage sandbox" in refused, (argv, refused)
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert "took over the lock" in recovered.stdout, output(recovered)
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert_serving(deployed, deployed.first_release, HEAD)
    assert status(deployed)["lock"] is None


def test_an_unfinished_deploy_with_its_lock_released_is_refused_from_any_controller_until_recovered(deployed):
    """As after an undo that failed: the journal kept, the lock released; written by CI on another machine."""
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> switch", ["deploy"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ssh(deployed, "app1", "rm -rf /srv/app/.lock")
    as_other_controller(deployed, None, host="ci-runner-7")
    shown = deployed.fab("status", db=False)
    assert "INTERRUPTED" in shown.stdout and "ci-runner-7" in shown.stdout, output(shown)
    refused = assert_clean_failure(deploy(deployed))
    assert "was interrupted" in refused, refused
    assert status(deployed)["lock"] is None  # the refused deploy released the lock it took
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert_serving(deployed, deployed.first_release, HEAD)


def test_ctrl_c_during_the_migration_stops_the_remote_migration_before_the_undo(deployed):
    add_migration(deployed, SLOW_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> migrate", ["deploy"])
    deadline = time.monotonic() + 60
    while not pids_running(deployed.sandbox, ".venv/bin/python -m flask", " db upgrade") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    text = "".join(proc.seen) + rest
    assert proc.returncode == 130 and "Traceback" not in text, text
    assert pids_running(deployed.sandbox, ".venv/bin/python -m flask", " db upgrade") == []
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(deployed, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == "0"
    assert_serving(deployed, deployed.first_release, HEAD)


@pytest.fixture
def remotes(staged):
    stage = load_stage(load_project(staged.root), "sandbox")
    with connect(stage) as found:
        yield found


def test_a_command_past_its_timeout_is_stopped_on_the_host(remotes, sandbox):
    with pytest.raises(HostError, match="did not finish within 1s; it was stopped"):
        remotes["app1"].run(["sh", "-c", "sleep 97; echo late"], timeout=1)
    assert pids_running(sandbox, "sleep 97") == []


def test_ctrl_c_during_a_run_on_several_hosts_stops_every_host_s_command(remotes, sandbox):
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        on_hosts("sleeping", [remotes["app1"], remotes["app2"]], lambda r: r.run(["sleep", "98"]))
    assert time.monotonic() - started < 15
    assert pids_running(sandbox, "sleep 98") == []


def test_output_that_reaches_the_controller_after_the_exit_status_is_read_in_full(remotes):
    """sshd may send a command's exit status before the last of its output (it reaps the child
    before it drains the pipe): a journal read that way came back empty, "unreadable". A child
    that writes after its parent exited gives that order every time."""
    out = remotes["app1"].run(["sh", "-c", "(sleep 0.3; echo written after the exit) &"])
    assert out.stdout == "written after the exit\n"


def test_a_connection_lost_during_a_command_is_an_error_even_when_its_exit_code_is_not_checked(remotes):
    """A lost connection closes the channel with no exit status: it is not the command's answer
    (a check=False caller would read "not active" from a `systemctl is-active` that never ran)."""
    remote = remotes["app2"]
    remote.run(["true"])
    threading.Timer(0.5, remote.conn.transport.sock.close).start()
    with pytest.raises(HostError, match="connection was lost"):
        remote.run(["sleep", "3"], check=False)


def test_ctrl_c_inside_paramiko_as_a_command_starts_stops_it_and_leaves_the_connection_usable(remotes, sandbox):
    """The Ctrl-C lands while paramiko holds its send lock (between acquire and try): raised
    there, the lock stays held and the undo's next command on that host waits for ever."""
    remote = remotes["app1"]
    remote.run(["true"])
    gate = remote.conn.transport.clear_to_send
    pressed = []

    def ctrl_c_inside_the_send_lock() -> bool:
        if not pressed and threading.current_thread() is threading.main_thread():
            pressed.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return threading.Event.is_set(gate)

    gate.is_set = ctrl_c_inside_the_send_lock
    try:
        with pytest.raises(KeyboardInterrupt):
            remote.run(["sleep", "96"])
    finally:
        del gate.is_set
    assert pressed
    after = []
    worker = threading.Thread(target=lambda: after.append(remote.run(["echo", "still usable"]).stdout), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert after == ["still usable\n"], "the connection hangs: paramiko's send lock was left held"
    assert pids_running(sandbox, "sleep 96") == []


def test_a_restore_whose_controller_was_killed_is_undone_by_recover_which_names_the_safety_backup(deployed):
    backup = deployed.fab("backup", "--label", "old", db=False)
    assert backup.returncode == 0, output(backup)
    old = backup.stdout.split("backup ", 1)[1].split(":", 1)[0]
    sql(deployed, "INSERT INTO boards (name) VALUES ('after the backup')")
    proc = run_until(deployed, "-> restore", ["restore", old])
    safety = next(line for line in proc.seen if "safety backup of the current database" in line).split()[-1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    shown = deployed.fab("status", db=False)
    assert "INTERRUPTED" in shown.stdout and f"restore of {old} stopped at step 'restore'" in shown.stdout, output(shown)
    refused = assert_clean_failure(deploy(deployed))
    assert "an earlier restore was interrupted" in refused, refused
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert f"put the safety backup {safety} back" in recovered.stdout and safety in recovered.stdout
    assert sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards") == "kept,also kept,after the backup"
    assert_serving(deployed, deployed.first_release, HEAD)  # the app, stopped for the restore, runs again
    assert status(deployed)["lock"] is None


def test_a_rollback_whose_controller_was_killed_is_undone_by_recover(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    assert deploy(deployed).returncode == 0
    newer = current(deployed, "app1")
    proc = run_until(deployed, "-> database", ["rollback"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    shown = deployed.fab("status", db=False)
    assert "INTERRUPTED" in shown.stdout and f"rollback {newer} -> {deployed.first_release}" in shown.stdout
    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert_serving(deployed, newer, NEW)
    assert status(deployed)["lock"] is None and status(deployed)["interrupted"] is None
