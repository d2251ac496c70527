"""`fab backups.check`, the timers' commands, retention, and backups that fail, against
the sandbox's real PostgreSQL host."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time

import pytest
from conftest import output
from fleet_helpers import (GOOD_MIGRATION, HEAD, add_migration, command_lines, current, deploy, deploy_and_seed,
                           Holding, psql_command, run_until, sql, ssh, wait_for_lock_waiter, wait_for_sql, with_env)

from deploy.sandbox import faults
from deploy.sandbox.system import in_host

pytestmark = pytest.mark.timeout(300)

BACKUPS = "/srv/app/backups"


PROM = "/srv/app/metrics/flask_deploy_backup.prom"


@pytest.fixture
def deployed(staged):
    return deploy_and_seed(staged, "one", "two", "three")


def backup(project, label: str) -> dict:
    proc = project.fab("backup", "--label", label, db=False)
    assert proc.returncode == 0, output(proc)
    return next(m for m in listed(project) if m["id"].endswith(f"-{label}"))


def listed(project) -> list[dict]:
    return json.loads(project.fab("backups", "--json", db=False).stdout)


def check(project, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = project.fab("backups.check", "--json", *args, db=False)
    assert "Traceback" not in output(proc) and proc.stdout.startswith("{"), output(proc)
    return proc, json.loads(proc.stdout)


def states(report: dict) -> dict[str, str]:
    return {c["check"]: c["state"] for c in report["checks"]}


def scratch_databases(project) -> str:
    return sql(project, "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'flask_deploy_restore%'")


def on_server(project, command: str) -> str:
    proc = ssh(project, "app1", command)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def edit_manifest(project, backup_id: str, **changes) -> None:
    """Rewrite fields of a manifest on the server (what an old or odd backup looks like)."""
    code = (f"import json; p = {BACKUPS + '/' + backup_id + '.json'!r}; m = json.load(open(p)); "
            f"m.update(json.loads({json.dumps(json.dumps(changes))})); json.dump(m, open(p, 'w'))")
    on_server(project, f"python3 -c {shlex.quote(code)}")


def configure_backups(project, text: str) -> None:
    with open(project.root / "deploy.toml", "a") as f:
        f.write(f"\n[stages.sandbox.backups]\n{text}\n")


def test_a_good_backup_passes_every_check_with_a_restore_test_that_drops_its_scratch_database(deployed):
    made = backup(deployed, "good")
    proc, report = check(deployed)
    assert proc.returncode == 0, output(proc)
    assert states(report) == {"age": "OK", "size": "OK", "sha256": "OK", "read": "OK", "restore": "OK"}
    assert report["backup"] == made["id"]
    restore = next(c for c in report["checks"] if c["check"] == "restore")
    assert restore["ran"] is True and restore["seconds"] > 0 and "row counts of 3 tables" in restore["detail"]
    assert scratch_databases(deployed) == ""
    prom = on_server(deployed, f"cat {PROM}")
    assert 'flask_deploy_backup_check_status{database="app",check="all"} 0' in prom
    assert 'flask_deploy_backup_check_status{database="app",check="restore"} 0' in prom
    assert "flask_deploy_backup_restore_test_seconds" in prom
    verified = next(m for m in listed(deployed) if m["id"] == made["id"])["verified"]
    assert verified["ok"] is True and verified["source"] == "check"
    # the next run does not restore again (weekly by default), and both runs are in the history
    again = deployed.fab("backups.check", db=False)
    assert again.returncode == 0, output(again)
    assert "restore  OK        not run: last passed" in again.stdout
    history = [json.loads(line) for line in on_server(deployed, f"cat {BACKUPS}/check-history.jsonl").splitlines()]
    assert [h["state"] for h in history] == ["OK", "OK"]
    assert [next(c["ran"] for c in h["checks"] if c["check"] == "restore") for h in history] == [True, False]


def test_one_flipped_byte_in_the_dump_is_critical(deployed):
    made = backup(deployed, "flip")
    on_server(deployed, f"printf 'X' | dd of={BACKUPS}/{made['id']}.dump/toc.dat bs=1 seek=200 conv=notrunc status=none")
    proc, report = check(deployed, "--skip-restore-test")
    assert proc.returncode == 2, output(proc)
    assert states(report)["sha256"] == "CRITICAL" and "changed: toc.dat" in report["checks"][2]["detail"]
    assert "backup check CRITICAL: sha256 CRITICAL" in proc.stderr
    assert 'check="all"} 2' in on_server(deployed, f"cat {PROM}")


def test_a_truncated_dump_is_critical_and_its_failed_restore_test_still_drops_the_scratch_database(deployed):
    sql(deployed, "INSERT INTO boards (name) SELECT 'board ' || g FROM generate_series(1, 3000) g")
    made = backup(deployed, "cut")
    largest = max(made["files"], key=lambda name: name != "toc.dat" and name.endswith(".gz"))
    on_server(deployed, f"f={BACKUPS}/{made['id']}.dump/{largest}; truncate -s $(( $(stat -c %s $f) / 2 )) $f")
    proc, report = check(deployed, "--restore-test")
    assert proc.returncode == 2, output(proc)
    assert states(report) == {"age": "OK", "size": "OK", "sha256": "CRITICAL", "read": "CRITICAL",
                              "restore": "CRITICAL"}
    assert scratch_databases(deployed) == ""


def test_an_old_backup_is_a_warning_or_critical_as_the_stage_configures(deployed):
    backup(deployed, "old")
    taken = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30 * 3600))
    for made in listed(deployed):  # this one and the first deploy's
        edit_manifest(deployed, made["id"], time=taken)
    proc, report = check(deployed, "--skip-restore-test")
    assert proc.returncode == 1, output(proc)
    assert states(report)["age"] == "WARNING" and "30.0 h old" in report["checks"][0]["detail"]
    configure_backups(deployed, "warn_age_hours = 12\ncrit_age_hours = 24")
    proc, report = check(deployed, "--skip-restore-test")
    assert proc.returncode == 2 and states(report)["age"] == "CRITICAL", output(proc)


def test_an_anomalously_small_or_empty_dump_is_a_warning(deployed):
    sql(deployed, "INSERT INTO boards (name) SELECT md5(g::text) || repeat(' lorem ipsum', 20) "
                  "FROM generate_series(1, 5000) g")
    backup(deployed, "big1")
    backup(deployed, "big2")
    sql(deployed, "DELETE FROM boards WHERE id > 10")
    backup(deployed, "small")
    proc, report = check(deployed, "--skip-restore-test")
    assert proc.returncode == 1, output(proc)
    assert states(report)["size"] == "WARNING" and "smaller than the median" in report["checks"][1]["detail"]
    sql(deployed, "DELETE FROM cards; DELETE FROM boards")
    backup(deployed, "empty")
    proc, report = check(deployed, "--skip-restore-test")
    assert proc.returncode == 1 and "holds no rows" in report["checks"][1]["detail"], output(proc)


def test_no_backup_at_all_is_critical(staged):
    assert deploy(staged).returncode == 0
    on_server(staged, f"rm -r {BACKUPS}/*")
    proc, report = check(staged)
    assert proc.returncode == 2 and "there is no backup" in report["checks"][0]["detail"], output(proc)


def unit(project, name: str) -> dict[str, str]:
    """The [Service]/[Timer] keys of a unit installed on app1."""
    text = on_server(project, f"cat /etc/systemd/system/{name}")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def at(seconds: float) -> str:
    """A systemd calendar spec `seconds` from now (the hosts share this machine's clock)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() + seconds))


def as_root(project, *argv: str) -> str:
    return in_host(project.sandbox.find("app1"), list(argv)).stdout


def wait_for_run(project, unit_name: str, seconds: float = 90) -> dict[str, str]:
    """Until systemd has run the oneshot `unit_name` once; its Result and exit status."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shown = as_root(project, "systemctl", "show", "--property=Result,ExecMainExitTimestampMonotonic,"
                                 "ExecMainStatus,ActiveState", unit_name)
        keys = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        if keys["ExecMainExitTimestampMonotonic"] != "0" and keys["ActiveState"] != "activating":
            return keys
        time.sleep(0.5)
    raise AssertionError(f"systemd did not run {unit_name} within {seconds}s")


def test_fab_setup_enables_timers_that_systemd_fires_to_back_up_prune_and_check(deployed):
    for label in ("a", "b"):
        backup(deployed, label)
    schedule, check_schedule = at(10), at(16)
    configure_backups(deployed, f'keep = 2\nkeep_daily_days = 0\nschedule = "{schedule}"\n'
                                f'check_schedule = "{check_schedule}"')
    setup = deployed.fab("setup", db=False)
    assert setup.returncode == 0, output(setup)
    assert "app-backup.timer" in setup.stdout and "timers enabled" in setup.stdout, output(setup)
    assert unit(deployed, "app-backup.timer")["OnCalendar"] == schedule
    assert unit(deployed, "app-backup-check.timer")["OnCalendar"] == check_schedule
    # The nightly timer spreads its start over 5 minutes (RandomizedDelaySec); an operator's
    # drop-in takes that away here, as one would to move the backup.
    in_host(deployed.sandbox.find("app1"), ["sh", "-ec", 'mkdir -p "$1" && printf "[Timer]\\nRandomizedDelaySec=0\\n" '
            '> "$1/now.conf" && systemctl daemon-reload && systemctl restart app-backup.timer',
            "drop-in", "/etc/systemd/system/app-backup.timer.d"])
    timers = on_server(deployed, "systemctl list-timers --all --no-pager app-backup.timer app-backup-check.timer")
    assert "app-backup.timer" in timers and "app-backup-check.timer" in timers, timers
    assert wait_for_run(deployed, "app-backup.service")["Result"] == "success"
    nightly = next(m for m in listed(deployed) if m["id"].endswith("-nightly"))
    assert nightly["release"] == deployed.first_release
    assert sorted(m["id"].rsplit("-", 1)[1] for m in listed(deployed)) == ["b", "nightly", "predeploy"]
    assert wait_for_run(deployed, "app-backup-check.service")["Result"] == "success"
    journal = as_root(deployed, "journalctl", "--no-pager", "-o", "cat", "-u", "app-backup-check.service")
    assert f"backup check of {nightly['id']}" in journal and "OK" in journal, journal
    assert 'check="all"} 0' in on_server(deployed, f"cat {PROM}")
    assert on_server(deployed, f"stat -c '%a %U' {PROM}").strip() == "644 deploy"


def test_retention_keeps_the_newest_the_newest_verified_and_live_deploy_backups(deployed):
    configure_backups(deployed, "keep = 2\nkeep_daily_days = 0")
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    assert deploy(deployed).returncode == 0
    release = current(deployed, "app1")
    backup(deployed, "m1")
    assert check(deployed, "--skip-restore-test")[0].returncode == 0  # m1 is now the newest verified
    backup(deployed, "m2")
    proc = deployed.fab("backup", "--label", "m3", db=False)
    assert proc.returncode == 0, output(proc)
    assert "retention removed" not in proc.stdout  # m1 verified, predeploy live, m2 and m3 newest
    proc = deployed.fab("backup", "--label", "m4", db=False)
    assert "retention removed 1 older backup(s)" in proc.stdout and "-m2" in proc.stdout, output(proc)
    kept = sorted(m["id"].split("-", 1)[1] for m in listed(deployed))
    deploys = sorted(f"{r.split('-', 1)[1]}-predeploy" for r in (deployed.first_release, release))
    assert kept == sorted(["m1", "m3", "m4", *deploys])
    assert on_server(deployed, f"ls {BACKUPS} | grep -c m2 || true").strip() == "0"


def test_a_disk_that_fills_during_the_backup_removes_the_partial_dump_and_stops_the_deploy_before_migrating(deployed):
    sql(deployed, "INSERT INTO boards (name) SELECT md5(g::text) FROM generate_series(1, 20000) g")
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    before = on_server(deployed, f"ls {BACKUPS}")
    lock = Holding(deployed, "boards")
    try:
        running = run_until(deployed, "-> backup", ["deploy"])  # the release is built
        wait_for_lock_waiter(deployed)  # the backup is counting rows
        faults.apply(deployed.sandbox, "app1", "fill-disk")
    finally:
        lock.release()
    text = "".join(running.seen) + running.communicate(timeout=240)[0]
    faults.apply(deployed.sandbox, "app1", "free-disk")
    assert running.returncode != 0 and "Traceback" not in text, text
    assert "step 'backup' failed" in text and "No space left on device" in text
    assert "-> migrate" not in text
    assert on_server(deployed, f"ls {BACKUPS}") == before  # nothing partial left
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert current(deployed, "app1") == deployed.first_release


def test_the_database_password_never_appears_in_a_process_command_line_during_a_backup(deployed):
    password = on_server(deployed, "sed -n 's/.*:\\(.*\\)@.*/\\1/p' /srv/app/shared/env").strip()
    assert len(password) >= 16
    sql(deployed, "INSERT INTO boards (name) SELECT md5(g::text) || repeat('x', 200) FROM generate_series(1, 60000) g")
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.extend(line for line in command_lines(deployed.sandbox.hosts).values()
                        if "pg_dump" in line or "psql" in line or "backup_tool" in line)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        made = backup(deployed, "watched")
    finally:
        done.set()
        watcher.join()
    assert any("/bin/pg_dump --format=directory" in line for line in seen), sorted(set(seen))[:5]
    assert not [line for line in seen if password in line]
    assert password not in json.dumps(made)


def test_backups_can_live_on_the_database_host_with_their_units_checks_and_retention(deployed):
    configure_backups(deployed, 'host = "db"\nkeep = 1\nkeep_daily_days = 0')
    setup = deployed.fab("setup", db=False)
    assert setup.returncode == 0, output(setup)
    assert "db: env file kept; installed app-backup.service" in setup.stdout, output(setup)
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = deploy(deployed)
    assert proc.returncode == 0 and "[db] backup " in proc.stdout, output(proc)
    release = current(deployed, "app1")
    made = backup(deployed, "on-db")
    assert ssh(deployed, "db", f"test -f {BACKUPS}/{made['id']}.json").returncode == 0
    assert ssh(deployed, "app1", f"ls {BACKUPS}").stdout.split() == [
        f"{deployed.first_release}-predeploy.dump", f"{deployed.first_release}-predeploy.json"]  # the first deploy's
    # retention on the db host keeps the live deploy's backup, as the migrations host told it
    assert sorted(m["id"] for m in listed(deployed)) == sorted([f"{release}-predeploy", made["id"]])
    proc, report = check(deployed, "--restore-test")
    assert proc.returncode == 0 and report["backup"] == made["id"], output(proc)
    nightly = ssh(deployed, "db", "cat /etc/systemd/system/app-backup.service")
    assert "ExecStart=/usr/bin/python3 /srv/app/tools/backup_tool.py --deploy-to /srv/app dump" in nightly.stdout


def test_backup_benchmark_smoke_run_measures_both_dumps_and_restores_and_cleans_up(sandbox):
    from bench.backups import bench_backups
    from deploy.config import load_project
    from deploy.sandbox import dbhost

    text = bench_backups(load_project(), 1, size=5, sandbox=sandbox)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "| 1 |" in line]
    assert len(rows) == 10, text
    assert "| speed: plain time / project time |" in text and "| size: project / plain |" in text
    assert dbhost.psql(sandbox.db, "SELECT count(*) FROM pg_database WHERE datname LIKE 'flask_deploy_bench%'").strip() == "0"
    assert subprocess.run(["ssh", "-F", str(sandbox.ssh_config), "app1", "test -e /srv/app/bench"]).returncode == 1


def test_the_manifests_row_counts_are_the_dumps_even_while_the_app_writes(deployed):
    writer = subprocess.Popen(
        ["ssh", "-F", str(deployed.sandbox.ssh_config), "app1", psql_command(
            "-Xqc", "DO $$ BEGIN FOR i IN 1..600 LOOP INSERT INTO boards (name) VALUES ('w' || i); COMMIT; "
            "PERFORM pg_sleep(0.01); END LOOP; END $$")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_sql(deployed, "SELECT count(*) FROM boards", lambda n: int(n) > 3, "the writer never wrote", 30)
    made = backup(deployed, "busy")
    assert writer.wait(timeout=60) == 0, writer.stdout.read()
    assert 3 < made["row_counts"]["public.boards"] < 603  # taken while rows were being added
    proc, report = check(deployed, "--restore-test")
    assert proc.returncode == 0 and states(report)["restore"] == "OK", output(proc)


def retention(project, keep: int) -> list[str]:
    """Retention as the backup timer runs it after its dump (the tool fab keeps in tools/), keeping `keep`."""
    command = with_env("python3", "/srv/app/tools/backup_tool.py", "--deploy-to", "/srv/app", "prune",
                       "--keep", str(keep), "--keep-daily-days", "0")
    return json.loads(on_server(project, command))["pruned"]


def test_retention_never_removes_a_backup_that_a_restore_is_reading(deployed):
    old = backup(deployed, "old")["id"]
    backup(deployed, "newer")
    holding = Holding(deployed, "boards")  # the restore's safety backup waits behind it: the restore is under way
    restore = subprocess.Popen([sys.executable, "-m", "fabric", "restore", old], cwd=deployed.root,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"})
    try:
        wait_for_lock_waiter(deployed)
        pruned = retention(deployed, keep=1)  # would keep only "newer" (and live deploy backups)
    finally:
        holding.release()
    text = restore.communicate(timeout=180)[0]
    assert restore.returncode == 0, text
    assert old not in pruned and old in {m["id"] for m in listed(deployed)}, pruned
    assert on_server(deployed, f"ls -A {BACKUPS}/.pins") == ""  # the restore unpinned it when done


def test_two_restore_tests_at_once_both_pass_and_leave_no_scratch_database(deployed):
    backup(deployed, "checked")
    procs = [subprocess.Popen([sys.executable, "-m", "fabric", "backups.check", "--json", "--restore-test"],
                              cwd=deployed.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"}) for _ in range(2)]
    results = [(p.wait(timeout=180), p.stdout.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    for _, text in results:
        assert states(json.loads(text))["restore"] == "OK", text
    assert scratch_databases(deployed) == ""


def test_a_manual_backup_waits_for_no_migration_it_takes_the_stage_lock(deployed):
    locked = deployed.fab("lock", db=False)
    assert locked.returncode == 0, output(locked)
    try:
        refused = deployed.fab("backup", db=False)
    finally:
        deployed.fab("unlock", db=False)
    assert refused.returncode == 1 and "is locked by" in output(refused), output(refused)


def test_the_timers_backup_waits_while_an_operation_holds_the_stage_lock(deployed):
    before = {m["id"] for m in listed(deployed)}
    assert deployed.fab("lock", db=False).returncode == 0
    command = with_env("python3", "/srv/app/tools/backup_tool.py", "--deploy-to", "/srv/app", "dump",
                       "--label", "nightly", "--wait-for-stage")
    nightly = subprocess.Popen(["ssh", "-F", str(deployed.sandbox.ssh_config), "app1", command],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(6)  # longer than its polling interval: it must still be waiting
        assert nightly.poll() is None and {m["id"] for m in listed(deployed)} == before
    finally:
        deployed.fab("unlock", db=False)
    assert nightly.wait(timeout=60) == 0, nightly.stdout.read()
    assert any(m.endswith("-nightly") for m in {m["id"] for m in listed(deployed)} - before)
