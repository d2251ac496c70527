"""`fab deploy` against the sandbox fleet: real SSH, PostgreSQL, git and gunicorn.
Each test deploys a scratch copy of the project, as a user runs `fab`."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import (FAILING_MIGRATION, GOOD_MIGRATION, HEAD, add_migration, assert_serving, break_the_app,
                           current, deploy, health, Load, sql, ssh, through_lb)

from bench.scratch import add_column_migration

pytestmark = pytest.mark.timeout(300)


def test_first_deploy_onto_empty_hosts_installs_the_environment_migrates_and_serves(clean_sandbox, project):
    from conftest import point_at_sandbox

    project.sandbox = clean_sandbox
    point_at_sandbox(project, clean_sandbox)
    for host in clean_sandbox.apps:  # nothing installed: `fab setup` installs the unit as the admin account
        (host.rootfs / "etc/systemd/system/app.service").unlink()
    setup = project.fab("setup", db=False)
    assert setup.returncode == 0, output(setup)
    assert "app2: env file kept; installed app.service and /etc/sudoers.d/flask-deploy-deploy (as deploy-admin)" in output(setup)
    assert ("app1: env file kept; installed app.service, app-backup.service, app-backup.timer, app-backup-check.service, "
            "app-backup-check.timer and /etc/sudoers.d/flask-deploy-deploy (as deploy-admin)") in output(setup)
    assert "deploy reads the journal (group systemd-journal)" in output(setup)
    assert "Environment=BIND=0.0.0.0:8000" in (clean_sandbox.apps[0].rootfs / "etc/systemd/system/app.service").read_text()
    proc = deploy(project)
    assert proc.returncode == 0, output(proc)
    text = output(proc)
    assert "installed from uploaded wheels" in text and "database (empty) -> " + HEAD in text
    release = current(project, "app1")
    for host in ("app1", "app2"):
        assert current(project, host) == release
        assert health(project, host) == {"release": release, "revision": HEAD, "expected_revision": HEAD, "status": "ok",
                                         "env_reload": True}
    assert sql(project, "SELECT version_num FROM alembic_version") == HEAD
    status = json.loads(project.fab("status", "--json", db=False).stdout)
    assert status["hosts"]["app2"]["health"]["code"] == 200 and status["lock"] is None
    log = ssh(project, "app1", "tail -1 /srv/app/deploy.log").stdout
    entry = json.loads(log)
    assert entry["outcome"] == "ok" and entry["release"] == release and entry["revision_after"] == HEAD
    assert entry["backup"] == f"{release}-predeploy"


def test_deploy_with_nothing_changed_installs_nothing_runs_no_migration_and_drops_no_request(deployed):
    load = Load(through_lb(deployed, "/boards"))
    load.start()
    proc = deploy(deployed)
    load.stop()
    assert proc.returncode == 0, output(proc)
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:3])
    text = output(proc)
    assert text.count("environment reused (no dependency change)") == 2
    assert "to run: nothing" in text and "no backup needed" in text
    release = current(deployed, "app1")
    assert release != deployed.first_release
    assert health(deployed, "app2")["release"] == release
    releases = json.loads(deployed.fab("releases", "--json", db=False).stdout)
    assert [(r["status"], r["current"]) for r in releases] == [("good", False), ("good", True)]


def test_a_reload_keeps_the_old_workers_serving_until_the_new_ones_have_loaded_the_app(deployed):
    proc = deploy(deployed)
    assert proc.returncode == 0, output(proc)
    assert output(proc).count("reloaded; healthy on") == 2
    for _ in range(50):  # the old workers stop once the new ones are ready: wait for their exit lines
        log = ssh(deployed, "app1", "journalctl -u app.service").stdout.splitlines()
        log = log[max(i for i, line in enumerate(log) if "Handling signal: hup" in line):]
        text = "\n".join(log)
        new = set(re.findall(r"Booting worker with pid: (\d+)", text))
        old = [pid for pid in re.findall(r"Worker exiting \(pid: (\d+)\)", text) if pid not in new]
        if len(old) == 2:
            break
        time.sleep(0.2)
    assert len(new) == 2 and len(old) == 2, text

    def line_of(event: str, pid: str) -> int:
        return next(i for i, line in enumerate(log) if f"{event} (pid: {pid})" in line)
    last_ready = max(line_of("Worker ready", pid) for pid in new)
    assert all(line_of("Worker exiting", pid) > last_ready for pid in old), text
    # A stop with no newer worker to wait for (shutdown, restart) is not delayed.
    started = time.monotonic()
    restart = ssh(deployed, "app1", "sudo -n systemctl restart app.service")
    assert restart.returncode == 0, restart.stderr
    assert time.monotonic() - started < 10
    assert health(deployed, "app1")["release"] == current(deployed, "app1")


def test_deploy_with_a_new_migration_backs_up_then_migrates_once(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = deploy(deployed)
    assert proc.returncode == 0, output(proc)
    assert "backup " in output(proc) and f"database {HEAD} -> a0d0a0d0beef" in output(proc)
    assert sql(deployed, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"
    assert sql(deployed, "SELECT count(*) FROM boards") == "2"
    assert health(deployed, "app1")["revision"] == "a0d0a0d0beef"
    found = ssh(deployed, "app1", "find /srv/app/backups -printf '%m %y %p\\n'").stdout.split()
    modes = {(mode, kind) for mode, kind, _ in zip(found[::3], found[1::3], found[2::3], strict=True)}
    assert modes == {("700", "d"), ("600", "f")}, found  # the backups folder, each dump folder; every file


def test_a_failing_migration_leaves_the_database_and_the_old_release_as_they_were(deployed):
    before = sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards")
    add_migration(deployed, FAILING_MIGRATION, "f00dfa11beef_fail.py")
    proc = deploy(deployed)
    text = assert_clean_failure(proc)
    assert "step 'migrate' failed" in text and "division by zero" in text
    assert "database untouched at " + HEAD in text
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards") == before
    assert sql(deployed, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == "0"
    for host in ("app1", "app2"):
        assert current(deployed, host) == deployed.first_release
        assert health(deployed, host)["release"] == deployed.first_release
    releases = json.loads(deployed.fab("releases", "--json", db=False).stdout)
    assert [r["status"] for r in releases] == ["good", "failed"]
    entry = json.loads(ssh(deployed, "app1", "tail -1 /srv/app/deploy.log").stdout)
    assert entry["outcome"] == "failed" and "division by zero" in entry["error"]
    assert json.loads(deployed.fab("status", "--json", db=False).stdout)["lock"] is None


def test_a_release_that_cannot_boot_is_refused_before_the_migration_and_no_request_fails(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    deployed.edit("app/__init__.py", "    db.init_app(app)\n", '    if "gunicorn" in __import__("sys").modules:\n'
                  '        raise RuntimeError("this release cannot be served")\n    db.init_app(app)\n')
    deployed.commit_all("break the app")
    deployed.push()
    load = Load(through_lb(deployed, "/boards"))
    load.start()
    proc = deploy(deployed)
    load.stop()
    text = assert_clean_failure(proc)
    assert "step 'build' failed" in text and "cannot boot (gunicorn --check-config" in text
    assert "this release cannot be served" in text  # the app's own error, from the host
    assert load.failures == [] and load.ok > 5, (load.ok, load.failures[:3])
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD  # never migrated
    assert_serving(deployed, deployed.first_release, HEAD)


def test_a_release_that_fails_its_health_check_is_rolled_back_everywhere_with_the_database(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    break_the_app(deployed)
    proc = deploy(deployed)
    text = assert_clean_failure(proc)
    assert "step 'switch' failed" in text
    assert "database downgraded to " + HEAD in text and "rolled back in " in text
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(deployed, "SELECT count(*) FROM boards") == "2"
    assert_serving(deployed, deployed.first_release, HEAD)
    entry = json.loads(ssh(deployed, "app1", "tail -1 /srv/app/deploy.log").stdout)
    assert 0 < entry["timings"]["rollback"] < 30


def test_a_host_failing_its_health_check_in_the_second_batch_reverts_the_first(deployed):
    # app2 alone cannot reach the database: its env file names a host that does not exist.
    broken = ssh(deployed, "app2", "sed -i 's/@/@nowhere-/' /srv/app/shared/env && sudo -n systemctl restart app.service")
    assert broken.returncode == 0, broken.stderr
    proc = deploy(deployed, "--batch", "1")
    text = assert_clean_failure(proc)
    assert "switch (batch 2) failed on 1 of 1 host(s)" in text and "app2" in text
    assert "switched back on app1, app2" in text
    assert current(deployed, "app1") == deployed.first_release
    assert health(deployed, "app1")["release"] == deployed.first_release


def test_a_second_deploy_is_refused_and_told_who_holds_the_lock(deployed):
    locked = deployed.fab("lock", db=False)
    assert locked.returncode == 0, output(locked)
    text = assert_clean_failure(deploy(deployed))
    assert "stage sandbox is locked by root@" in text and "manual lock" in text
    assert current(deployed, "app1") == deployed.first_release
    assert deployed.fab("unlock", db=False).returncode == 0
    assert deploy(deployed).returncode == 0


def test_refs_that_are_not_refs_are_refused_before_anything_changes(deployed):
    for ref in ["$(touch /tmp/pwned)", "main;touch /tmp/pwned", "--upload-pack=touch /tmp/pwned",
                "no-such-branch", "main\nx", "`touch /tmp/pwned`", "ré" * 200]:
        text = assert_clean_failure(deploy(deployed, "--ref", ref))
        assert "is not a" in text, ref
    for host in ("app1", "app2"):
        assert current(deployed, host) == deployed.first_release
        assert ssh(deployed, host, "ls /srv/app/releases | wc -l; ls /tmp/pwned 2>/dev/null").stdout.split() == ["1"]
    assert not Path("/tmp/pwned").exists()
    assert json.loads(deployed.fab("status", "--json", db=False).stdout)["lock"] is None


def test_an_unknown_stage_and_a_bad_batch_are_clear_errors(staged):
    assert "unknown stage 'nope'" in assert_clean_failure(staged.fab("deploy", "--stage", "nope", db=False))
    assert "--batch must be a whole number" in assert_clean_failure(deploy(staged, "--batch", "x"))


INDEX_WITHOUT_CONCURRENTLY = add_column_migration(
    "1d1d1d1d1d1d", HEAD, "note", "add a note, indexed the blocking way",
    then='op.create_index("ix_boards_note", "boards", ["note"])')


def test_a_history_run_into_an_empty_database_is_not_linted_but_one_with_tables_is(staged):
    add_migration(staged, INDEX_WITHOUT_CONCURRENTLY, "1d1d1d1d1d1d_note.py")
    empty = deploy(staged, "--dry-run")
    assert empty.returncode == 0, output(empty)
    assert "the database is empty: its history runs into it, which blocks nobody (not linted)" in empty.stdout
    sql(staged, "CREATE TABLE legacy (id bigint)")  # made outside Alembic: no revision, but not empty
    text = assert_clean_failure(deploy(staged, "--dry-run"))
    assert "lint failed for the migrations this deploy would run" in text
    assert "[require-concurrent-index-creation]" in text and "1d1d1d1d1d1d" in text


def test_rollback_after_a_good_deploy_puts_code_and_database_back(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    assert deploy(deployed).returncode == 0
    newer = current(deployed, "app1")
    proc = deployed.fab("rollback", db=False)
    assert proc.returncode == 0, output(proc)
    assert f"{newer} -> {deployed.first_release}" in proc.stdout
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(deployed, "SELECT count(*) FROM boards") == "2"
    assert_serving(deployed, deployed.first_release, HEAD)
    backups = ssh(deployed, "app1", "ls /srv/app/backups").stdout
    assert "prerollback.dump" in backups
    for bad, message in (("../../etc", "is not a release id"), ("20990101000000-deadbeef", "is not a release on"),
                         (deployed.first_release, "is already current")):
        assert message in assert_clean_failure(deployed.fab("rollback", "--to", bad, db=False))
    forward = deployed.fab("rollback", "--to", newer, db=False)  # and forward again
    assert forward.returncode == 0, output(forward)
    assert health(deployed, "app2") == {"release": newer, "revision": "a0d0a0d0beef",
                                        "expected_revision": "a0d0a0d0beef", "status": "ok", "env_reload": True}


def test_dry_run_prints_the_plan_with_the_sql_and_changes_nothing(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    before = ssh(deployed, "app1", "ls /srv/app/releases /srv/app/backups 2>&1; cat /srv/app/deploy.log").stdout
    proc = deploy(deployed, "--dry-run")
    assert proc.returncode == 0, output(proc)
    text = proc.stdout
    assert "ALTER TABLE boards ADD COLUMN note TEXT" in text and "backup first:" in text
    assert "app2" in text and "environment: reuse" in text
    assert ssh(deployed, "app1", "ls /srv/app/releases /srv/app/backups 2>&1; cat /srv/app/deploy.log").stdout == before
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    password = ssh(deployed, "app1", "sed -n 's/.*:\\(.*\\)@.*/\\1/p' /srv/app/shared/env").stdout.strip()
    assert password and password not in text
    assert json.loads(deployed.fab("status", "--json", db=False).stdout)["lock"] is None


def mapped_environments(sandbox, host_name: str) -> set[str]:
    """The Python environments whose files the app's processes on a host have mapped (workers import from them)."""
    from deploy.sandbox.system import pids_in

    found = set()
    for pid in pids_in(sandbox.find(host_name)):
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        found |= set(re.findall(r"/srv/app/shared/venvs/([0-9a-f]{16})/", maps))
    return found


def test_a_dependency_change_gets_a_new_environment_that_reloaded_workers_use_without_dropping_requests(deployed):
    old = mapped_environments(deployed.sandbox, "app1")
    assert len(old) == 1
    with open(deployed.root / "requirements" / "app.lock", "a") as lock:
        lock.write("# a changed lock file: a new environment\n")
    deployed.commit_all("change the lock")
    deployed.push()
    load = Load(through_lb(deployed, "/boards"))
    load.start()
    proc = deploy(deployed)
    load.stop()
    assert proc.returncode == 0, output(proc)
    assert output(proc).count("installed from uploaded wheels") == 2
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:3])
    for host in ("app1", "app2"):
        health(deployed, host)  # every worker has served a request by now (or will import on its first)
        new = mapped_environments(deployed.sandbox, host)
        assert new and not new & old, (host, old, new)


def test_cleanup_keeps_k_good_releases_plus_the_rollback_target_and_removes_failed_ones_and_reloads_go_on(deployed):
    deployed.edit("deploy.toml", "keep_releases = 5", "keep_releases = 1")
    deployed.commit_all("keep one release")
    add_migration(deployed, FAILING_MIGRATION, "f00dfa11beef_fail.py")
    assert deploy(deployed).returncode == 1  # leaves a failed release behind
    (deployed.root / "migrations" / "versions" / "f00dfa11beef_fail.py").unlink()
    deployed.commit_all("drop the failing migration")
    deployed.push()
    for _ in range(2):
        assert deploy(deployed).returncode == 0
    releases = json.loads(deployed.fab("releases", "--json", db=False).stdout)
    assert [r["status"] for r in releases] == ["good", "good"]
    assert deployed.first_release not in [r["id"] for r in releases]
    # The service started in the first release, now removed: a reload must still work
    # (gunicorn re-checks its default working directory on every reload).
    again = deploy(deployed)
    assert again.returncode == 0, output(again)
    assert output(again).count("reloaded; healthy on") == 2
    releases = json.loads(deployed.fab("releases", "--json", db=False).stdout)
    for host in ("app1", "app2"):
        assert ssh(deployed, host, "ls /srv/app/releases | wc -l").stdout.strip() == "2"
        assert health(deployed, host)["release"] == releases[-1]["id"]


def test_unlock_force_drops_a_dead_deploys_journal_and_lock_without_undoing_anything(deployed):
    import socket

    stale = {"release_id": "20990101000000-deadbeef", "step": "build", "state": "running",
             "holder": {"host": socket.gethostname(), "pid": 2**22 + 1, "user": "gone", "action": "deploy"}}
    ssh(deployed, "app1", f"mkdir /srv/app/.lock && touch -d '1 minute ago' /srv/app/.lock "
                          f"&& echo '{json.dumps(stale)}' > /srv/app/.journal.json")
    assert "an earlier deploy was interrupted" in assert_clean_failure(deploy(deployed))
    refused = assert_clean_failure(deployed.fab("unlock", db=False))
    assert "is locked by" in refused and "fab recover" in refused
    forced = deployed.fab("unlock", "--force", db=False)
    assert forced.returncode == 0 and "dropped the journal" in forced.stdout
    assert deploy(deployed).returncode == 0
