"""The pgbackrest engine on the sandbox: Debian's pgBackRest with its repository on the backup
host, WAL archived from the db host's PostgreSQL over SSH; backups, the check, restores to a
backup, a time and a release's restore point after real writes; the deploy's restore point and
its faults (the archive broken, a WAL file missing, a target no backup precedes)."""
from __future__ import annotations

import json
import shlex
import time

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import (BOARDS, GOOD_MIGRATION, HEAD, IRREVERSIBLE, add_migration, assert_serving, backups_listed,
                           break_the_app, current, deploy, fab_ok, run_until, sql, ssh, use_pgbackrest)

from deploy.sandbox import dbhost, faults
from deploy.sandbox.system import in_host

pytestmark = pytest.mark.timeout(400)


@pytest.fixture
def archived(staged):
    """The stage on the pgbackrest engine: set up (archiving on, the stanza made), a full backup,
    then the seed commit deployed with two boards."""
    return archive(staged)


@pytest.fixture
def archived_once_promoted(staged):
    """As `archived`, for a cluster that was promoted before (a failover, a restore): past timeline 1
    when its repository is made, so the repository has no history file of its timeline."""
    if timeline(staged.sandbox.db) == 1:  # the fleet's cluster outlives tests: an earlier test may have restored it
        promote(staged.sandbox.db)
    assert timeline(staged.sandbox.db) > 1
    return archive(staged)


def archive(staged):
    use_pgbackrest(staged)
    text = fab_ok(staged, "setup", "--restart-db")
    assert "stanza app ready, archiving checked" in text, text
    fab_ok(staged, "backup", "--type", "full")
    assert deploy(staged).returncode == 0
    staged.first_release = current(staged, "app1")
    sql(staged, "INSERT INTO boards (name) VALUES ('one'), ('two')")
    return staged


def timeline(db) -> int:
    """The timeline the db host's cluster writes on now."""
    return int(dbhost.psql(db, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)


def promote(db) -> None:
    """Restart the cluster as a standby, then promote it: it goes on, on the next timeline."""
    in_host(db, ["touch", f"/var/lib/postgresql/{dbhost.VERSION}/{dbhost.CLUSTER}/standby.signal"], user="postgres")
    in_host(db, ["systemctl", "restart", dbhost.UNIT])
    dbhost.psql(db, "SELECT pg_promote(true, 60)")


def listing(project, kind: str) -> list[dict]:
    """The entries of `fab backups --json` of this kind (backup or point)."""
    return [e for e in backups_listed(project) if e["kind"] == kind]


def test_a_release_restore_point_brings_back_the_database_as_it_was_before_that_deploy_migrated(archived):
    add_migration(archived, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    plan = fab_ok(archived, "deploy", "--dry-run")
    assert "-predeploy on db, reachable from a backup in backup's repository (no dump)" in plan, plan
    text = output(deploy(archived))
    assert "restore point" in text and "archive checked" in text, text
    second = current(archived, "app1")
    sql(archived, "INSERT INTO boards (name, note) VALUES ('three', 'written after the deploy')")
    point = next(p for p in listing(archived, "point") if p["release"] == second)
    assert point["name"] == f"{second}-predeploy" and point["timeline"] == timeline(archived.sandbox.db)

    text = fab_ok(archived, "restore.to", "--release", second)
    assert f"restore point {second}-predeploy" in text
    assert sql(archived, BOARDS) == "one,two"  # as before the migration: 'three' came after
    assert sql(archived, "SELECT version_num FROM alembic_version") == HEAD
    assert "fab rollback" in text  # the serving release expects the newer revision: it says what to run
    fab_ok(archived, "rollback", "--to", archived.first_release)
    assert_serving(archived, archived.first_release, HEAD)

    # The safety point holds the database as it was before the restore: 'three' is back from it.
    safety = next(p["id"] for p in listing(archived, "point") if p["id"].startswith("before-restore-"))
    fab_ok(archived, "restore.to", "--point", safety)
    assert sql(archived, BOARDS) == "one,two,three"
    log = ssh(archived, "app1", "tail -2 /srv/app/deploy.log").stdout
    assert f"the restore point {safety}" in log and "before-restore-" in log

    # The controller killed while the cluster is being restored: fab recover puts it back at that
    # restore's safety point and starts the app.
    proc = run_until(archived, "-> restore", ["restore.to", "--release", second])
    proc.kill()
    proc.wait()
    assert "INTERRUPTED" in fab_ok(archived, "status")
    text = fab_ok(archived, "recover")
    assert "back at the safety point before-restore-" in text, text
    assert sql(archived, BOARDS) == "one,two,three"
    for host in ("app1", "app2"):
        assert ssh(archived, host, "systemctl is-active app").stdout.strip() == "active"


def test_backups_are_listed_checked_restored_by_id_refused_before_any_backup_and_a_missing_wal_file_is_critical(archived):
    fab_ok(archived, "backup")  # a differential on top of the full
    found = listing(archived, "backup")
    assert [b["type"] for b in found] == ["full", "diff"] and all(b["size"] > 0 for b in found)
    proc = archived.fab("backups.check", "--restore-test", "--json", db=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["state"] == "OK", output(proc)
    checks = {c["check"]: c for c in report["checks"]}
    assert set(checks) == {"age", "size", "archive", "verify", "restore"}
    assert checks["restore"]["ran"] and checks["restore"]["row_counts"]["app.public.boards"] == 2
    metrics = ssh(archived, "backup", "cat /srv/app/metrics/flask_deploy_backup.prom").stdout
    assert 'flask_deploy_backup_check_status{database="app",check="archive"} 0' in metrics
    assert ssh(archived, "backup", "ls /srv/app/pgbackrest | grep -c scratch- || true").stdout.strip() == "0"
    units = ssh(archived, "backup", "systemctl list-timers --all --no-legend").stdout
    assert "app-backup-full.timer" in units and "app-backup-diff.timer" in units and "app-backup-check.timer" in units

    sql(archived, "DELETE FROM boards")
    text = fab_ok(archived, "restore", found[-1]["id"])  # the differential, as it was when it ended
    assert sql(archived, BOARDS) == "one,two"
    assert f"restored {found[-1]['id']}" not in text or "healthy" in text
    assert_serving(archived, archived.first_release, HEAD)

    # Targets that no backup precedes are refused before anything changes; a missing WAL file is found.
    before_any = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 3600))
    text = assert_clean_failure(archived.fab("restore.to", "--time", before_any, db=False))
    assert "no backup ended before" in text
    assert "in the future" in assert_clean_failure(archived.fab("restore.to", "--time", "2999-01-01 00:00:00", db=False))
    assert "name one target" in assert_clean_failure(archived.fab("restore.to", db=False))
    assert "no restore point of the release nope" in assert_clean_failure(
        archived.fab("restore.to", "--release", "nope", db=False))

    archive = "/srv/app/pgbackrest/repo/archive/app/15-1"
    for n in range(2):  # each check switches to a new WAL file: one in the middle can go
        sql(archived, f"INSERT INTO boards (name) VALUES ('x{n}')")
        fab_ok(archived, "backups.check", "--skip-restore-test")
    timelines = [d for d in ssh(archived, "backup", f"ls {archive}").stdout.split() if len(d) == 16]
    folder = f"{archive}/{sorted(timelines)[-1]}"  # the restore began a new timeline
    files = sorted(ssh(archived, "backup", f"ls {folder}").stdout.split())
    wal = [f for f in files if len(f.split("-")[0]) == 24 and "." not in f.split("-")[0]]
    gone = wal[len(wal) // 2]
    ssh(archived, "backup", f"rm {folder}/{gone}")
    proc = archived.fab("backups.check", "--skip-restore-test", db=False)
    assert proc.returncode == 2, output(proc)
    assert "archive  CRITICAL" in output(proc) and gone[:24] in output(proc)


def helper(project, *args: str) -> dict:
    """The db host's helper as the deploy user runs it (its sudo rule)."""
    proc = ssh(project, "db", shlex.join(["sudo", "-n", "/usr/local/sbin/flask-deploy-pgbackrest", args[0],
                                          "--stanza", "app", "--cluster", "15/main", *args[1:]]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_the_wal_proof_a_failed_downgrade_back_to_the_restore_point_and_a_broken_archive_stopping_the_next_deploy(
        archived_once_promoted):
    archived = archived_once_promoted
    point = helper(archived, "point", "probe")
    migration = sql(archived, "ALTER TABLE boards ADD COLUMN note2 text; UPDATE boards SET note2 = 'backfill'; "
                              "SELECT txid_current();").splitlines()[-1]  # (after the command tags)
    sql(archived, "ANALYZE boards")  # statistics are the catalog's, not the app's data
    assert helper(archived, "unwritten", "--since", point["lsn"], "--xids", migration)["reasons"] == []
    other = sql(archived, "DELETE FROM boards WHERE name = 'two'; SELECT txid_current();").splitlines()[-1]
    reasons = helper(archived, "unwritten", "--since", point["lsn"], "--xids", migration)["reasons"]
    assert len(reasons) == 1 and f"transaction {other} wrote" in reasons[0], reasons
    # The helper takes only what its sudo rule names, each argument checked.
    refused = ssh(archived, "db", "sudo -n /usr/local/sbin/flask-deploy-pgbackrest point --stanza app "
                                  "--cluster 15/main 'x;reboot'")
    assert refused.returncode != 0 and "not a valid name" in refused.stderr
    assert ssh(archived, "db", "sudo -n /usr/local/sbin/flask-deploy-pgbackrest archive --stanza app "
                               "--cluster 15/main").returncode != 0  # setup's, not the deploy user's
    other = ssh(archived, "db", "sudo -n /usr/local/sbin/flask-deploy-pgbackrest restore --stanza app "
                                "--cluster 15/other --type latest")  # another cluster of the host: never stopped
    assert other.returncode == 1 and "serves stanza app of cluster 15/main, not app of 15/other" in other.stdout

    # A failed downgrade goes back to the deploy's restore point when nothing but the migration wrote.
    add_migration(archived, IRREVERSIBLE, "a0d0a0d0beef_add_a_note.py")
    break_the_app(archived)
    text = assert_clean_failure(deploy(archived))
    assert "step 'switch' failed" in text and "restored to the pre-deploy restore point" in text, text
    assert sql(archived, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(archived, BOARDS) == "one"  # as at the deploy's point: after the probe's delete
    assert_serving(archived, archived.first_release, HEAD)

    # The archive broken: the repository's disk full, then its host cut off. The same pending
    # migration is tried again: the deploy stops before it.
    sandbox = archived.sandbox
    faults.fill_disk(sandbox, sandbox.backup)  # the repository's disk is full: archive-push fails
    try:
        text = assert_clean_failure(deploy(archived))
        assert "step 'backup' failed" in text and "WAL archiving is broken" in text, text
        assert sql(archived, "SELECT version_num FROM alembic_version") == HEAD
        proc = archived.fab("backups.check", "--skip-restore-test", db=False)
        assert proc.returncode == 2 and "archive  CRITICAL" in output(proc), output(proc)
    finally:
        faults.free_disk(sandbox, sandbox.backup)
    faults.cut_network(sandbox, sandbox.backup)  # the repository host is gone
    try:
        text = assert_clean_failure(deploy(archived))  # found by the preflight: before anything is built
        assert "step 'preflight' failed: backup: unreachable" in text, text
        assert sql(archived, "SELECT version_num FROM alembic_version") == HEAD
    finally:
        faults.restore_network(sandbox, sandbox.backup)
    assert_serving(archived, archived.first_release, HEAD)
