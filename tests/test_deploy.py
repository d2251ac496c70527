"""`fab deploy` against the sandbox fleet: real SSH, PostgreSQL, git and gunicorn.
Each test deploys a scratch copy of the project, as a user runs `fab`."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import assert_clean_failure, output

pytestmark = pytest.mark.timeout(300)

HEAD = "e2b8f4a6c913"
FAILING_MIGRATION = '''"""add a note, then fail"""
from alembic import op
import sqlalchemy as sa

revision = "f00dfa11beef"
down_revision = "e2b8f4a6c913"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("boards", sa.Column("note", sa.Text(), nullable=True))
    op.execute("SELECT 1 / 0")


def downgrade():
    op.drop_column("boards", "note")
'''
GOOD_MIGRATION = FAILING_MIGRATION.replace('    op.execute("SELECT 1 / 0")\n', "").replace(
    "add a note, then fail", "add a note").replace("f00dfa11beef", "a0d0a0d0beef")


def ssh(project, host: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(project.sandbox.ssh_config), host, command],
                          capture_output=True, text=True, timeout=60)


def sql(project, query: str) -> str:
    """A query on the stage's database, from app1 with the server's own env file."""
    proc = ssh(project, "app1", f"set -a && . /srv/app/shared/env && psql \"$DATABASE_URL\" -Atc {json.dumps(query)}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def health(project, host: str) -> dict:
    proc = ssh(project, host, "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8000/healthz\").read().decode())'")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_serving(project, release: str, revision: str) -> None:
    """Every app host's `current` is `release`, and it answers healthy at `revision`."""
    for host in ("app1", "app2"):
        assert current(project, host) == release, host
        assert health(project, host) == {"release": release, "revision": revision,
                                         "expected_revision": revision, "status": "ok"}, host


def deploy(project, *args: str) -> subprocess.CompletedProcess:
    return project.fab("deploy", *args, db=False)


def current(project, host: str) -> str:
    return ssh(project, host, "basename $(readlink /srv/app/current)").stdout.strip()


def add_migration(project, text: str, name: str) -> None:
    (project.root / "migrations" / "versions" / name).write_text(text)
    project.commit_all(name)
    project.push()


def deploy_and_seed(project, *names: str):
    """The project's commit deployed and healthy on the test fleet, with these boards in its database."""
    proc = deploy(project)
    assert proc.returncode == 0, output(proc)
    project.first_release = current(project, "app1")
    sql(project, "INSERT INTO boards (name) VALUES " + ", ".join(f"('{n}')" for n in names))
    return project


@pytest.fixture
def deployed(staged):
    """The seed commit deployed and healthy on the test fleet."""
    return deploy_and_seed(staged, "kept", "also kept")


def test_first_deploy_onto_empty_hosts_installs_the_environment_migrates_and_serves(clean_sandbox, project):
    from conftest import point_at_sandbox

    project.sandbox = clean_sandbox
    point_at_sandbox(project, clean_sandbox)
    for host in clean_sandbox.apps:  # nothing installed: `fab setup` installs the unit as the admin account
        (host.root / "systemd" / "app.service").unlink()
    setup = project.fab("setup", db=False)
    assert setup.returncode == 0, output(setup)
    assert "app2: env file kept; installed app.service and /etc/sudoers.d/flask-deploy-deploy (as deploy-admin)" in output(setup)
    assert ("app1: env file kept; installed app.service, app-backup.service, app-backup.timer, app-backup-check.service, "
            "app-backup-check.timer and /etc/sudoers.d/flask-deploy-deploy (as deploy-admin)") in output(setup)
    assert "Environment=BIND=0.0.0.0:8000" in (clean_sandbox.apps[0].root / "systemd" / "app.service").read_text()
    proc = deploy(project)
    assert proc.returncode == 0, output(proc)
    text = output(proc)
    assert "installed from uploaded wheels" in text and "database (empty) -> " + HEAD in text
    release = current(project, "app1")
    for host in ("app1", "app2"):
        assert current(project, host) == release
        assert health(project, host) == {"release": release, "revision": HEAD, "expected_revision": HEAD, "status": "ok"}
    assert sql(project, "SELECT version_num FROM alembic_version") == HEAD
    status = json.loads(project.fab("status", "--json", db=False).stdout)
    assert status["hosts"]["app2"]["health"]["code"] == 200 and status["lock"] is None
    log = ssh(project, "app1", "tail -1 /srv/app/deploy.log").stdout
    entry = json.loads(log)
    assert entry["outcome"] == "ok" and entry["release"] == release and entry["revision_after"] == HEAD
    assert entry["backup"] == f"{release}-predeploy"


class Load(threading.Thread):
    """Requests to every app host, back to back, until stopped; every failure is kept,
    and the slowest request's seconds."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls, self.done, self.ok, self.failures, self.slowest = urls, threading.Event(), 0, [], 0.0

    def run(self) -> None:
        while not self.done.is_set():
            for url in self.urls:
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(url, timeout=10) as answer:
                        answer.read()
                        self.ok += answer.status == 200
                except Exception as exc:  # a dropped request, whatever its kind
                    self.failures.append(repr(exc))
                self.slowest = max(self.slowest, time.monotonic() - started)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


def test_deploy_with_nothing_changed_installs_nothing_runs_no_migration_and_drops_no_request(deployed):
    load = Load([f"http://{h.address}:8000/healthz" for h in deployed.sandbox.apps])
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
    deployed.edit("app/gunicorn.conf.py", 'wsgi_app = "app:create_app()"', 'wsgi_app = "app:no_such_factory()"')
    deployed.commit_all("break the app")
    deployed.push()
    load = Load([f"http://{h.address}:8000/healthz" for h in deployed.sandbox.apps])
    load.start()
    proc = deploy(deployed)
    load.stop()
    text = assert_clean_failure(proc)
    assert "step 'build' failed" in text and "cannot boot (gunicorn --check-config" in text
    assert "no_such_factory" in text
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


def test_a_deploy_killed_on_the_controller_is_detected_and_recovered(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    env = dict(os.environ, NO_COLOR="1")
    env.pop("DATABASE_URL", None)
    killed = subprocess.Popen([sys.executable, "-m", "fabric", "deploy"], cwd=deployed.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in killed.stdout:
        if line.startswith("-> switch"):
            time.sleep(1.0)  # the first host may be switching now
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait(timeout=30)
    assert sql(deployed, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"  # migrated, then killed

    status = deployed.fab("status", db=False)
    assert "INTERRUPTED" in status.stdout and "stopped at step 'switch'" in status.stdout
    refused = assert_clean_failure(deploy(deployed))
    assert "an earlier deploy was interrupted" in refused and "fab recover" in refused

    recovered = deployed.fab("recover", db=False)
    assert recovered.returncode == 0, output(recovered)
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(deployed, "SELECT count(*) FROM boards") == "2"
    for host in ("app1", "app2"):
        assert current(deployed, host) == deployed.first_release
        assert health(deployed, host)["revision"] == HEAD
    after = json.loads(deployed.fab("status", "--json", db=False).stdout)
    assert after["lock"] is None and after["interrupted"] is None
    assert deploy(deployed).returncode == 0


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
                                        "expected_revision": "a0d0a0d0beef", "status": "ok"}


def run_until(project, line_start: str, argv: list[str]) -> subprocess.Popen:
    """Start `fab ...` and return once it prints a line starting with `line_start`."""
    env = dict(os.environ, NO_COLOR="1")
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "fabric", *argv], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.seen = []
    for line in proc.stdout:
        proc.seen.append(line)
        if line.startswith(line_start):
            return proc
    raise AssertionError("never saw " + line_start + ":\n" + "".join(proc.seen))


def test_ctrl_c_during_the_switch_undoes_everything_and_exits_130(deployed):
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> switch", ["deploy"])
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, "".join(proc.seen) + rest
    assert "interrupted (Ctrl-C)" in rest and "Traceback" not in rest
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    for host in ("app1", "app2"):
        assert current(deployed, host) == deployed.first_release
        assert health(deployed, host)["release"] == deployed.first_release
    assert json.loads(deployed.fab("status", "--json", db=False).stdout)["lock"] is None


SLOW_MIGRATION = GOOD_MIGRATION.replace(
    '    op.add_column("boards", sa.Column("note", sa.Text(), nullable=True))\n',
    '    op.add_column("boards", sa.Column("note", sa.Text(), nullable=True))\n    op.execute("SELECT pg_sleep(60)")\n')


def command_lines() -> dict[int, str]:
    """Every process's command line on the machine (the sandbox hosts share its process table)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:  # a process may end while we look
            found[int(name)] = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def pids_running(*words: str) -> list[int]:
    """Processes whose command line has all `words`."""
    return [pid for pid, line in command_lines().items() if all(w in line for w in words)]


def test_a_migration_process_killed_on_the_host_is_undone_and_its_orphaned_session_ended(deployed):
    before = sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards")
    add_migration(deployed, SLOW_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> migrate", ["deploy"])
    deadline = time.monotonic() + 60
    while not (pids := pids_running(".venv/bin/python -m flask", " db upgrade")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the upgrade is inside its transaction, holding boards' lock, sleeping
    assert pids, "the migration never started"
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
    from deploy.sandbox import faults
    from deploy.sandbox.system import in_host

    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    proc = run_until(deployed, "-> switch", ["deploy"])
    release = re.search(r"; release (\S+);", "".join(proc.seen)).group(1)
    wait_switched = f'until [ "$(readlink /srv/app/current)" = releases/{release} ]; do sleep 0.01; done'
    in_host(deployed.sandbox.find("app2"), ["timeout", "60", "sh", "-c", wait_switched])
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
    load = Load([f"http://{h.address}:8000/healthz" for h in deployed.sandbox.apps])
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


IRREVERSIBLE = GOOD_MIGRATION.replace('''def downgrade():
    op.drop_column("boards", "note")''', '''def downgrade():
    raise RuntimeError("this migration cannot be undone")''')


def break_the_app(project) -> None:
    """A release that boots but whose health check fails (500, without its release id)."""
    project.edit("app/health.py", "    heads = expected_heads()\n",
                 '    return jsonify(status="broken"), 500\n    heads = expected_heads()\n')
    project.commit_all("break the app")
    project.push()


def test_a_failed_downgrade_restores_the_predeploy_backup_when_nothing_was_written_since(deployed):
    add_migration(deployed, IRREVERSIBLE, "a0d0a0d0beef_add_a_note.py")
    break_the_app(deployed)
    text = assert_clean_failure(deploy(deployed))
    assert "step 'switch' failed" in text and "restored from the pre-deploy backup" in text
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards") == "kept,also kept"
    assert_serving(deployed, deployed.first_release, HEAD)


def test_a_failed_downgrade_stops_without_restoring_when_rows_were_written_since_the_backup(deployed):
    writes = IRREVERSIBLE.replace('''    op.add_column("boards", sa.Column("note", sa.Text(), nullable=True))''', '''    op.add_column("boards", sa.Column("note", sa.Text(), nullable=True))
    op.execute("UPDATE boards SET note = 'written after the backup'")''')
    add_migration(deployed, writes, "a0d0a0d0beef_add_a_note.py")
    break_the_app(deployed)
    text = assert_clean_failure(deploy(deployed))
    assert "the downgrade failed" in text and "row(s) were written since the pre-deploy backup" in text
    assert "fab restore --stage sandbox" in text
    assert sql(deployed, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"
    assert sql(deployed, "SELECT count(*) FROM boards WHERE note IS NOT NULL") == "2"  # nothing thrown away


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
    ssh(deployed, "app1", f"mkdir /srv/app/.lock && echo '{json.dumps(stale)}' > /srv/app/.journal.json")
    assert "an earlier deploy was interrupted" in assert_clean_failure(deploy(deployed))
    refused = assert_clean_failure(deployed.fab("unlock", db=False))
    assert "locked by a deploy" in refused and "fab recover" in refused
    forced = deployed.fab("unlock", "--force", db=False)
    assert forced.returncode == 0 and "dropped the journal" in forced.stdout
    assert deploy(deployed).returncode == 0


def test_fab_refuses_a_host_whose_key_is_wrong_or_unknown_and_never_adds_one(staged):
    lines = staged.sandbox.known_hosts.read_text().splitlines()
    app1, app2 = lines[0].split(), lines[1].split()
    for name, text, message in (("wrong_known_hosts", " ".join([app1[0], *app2[1:]]) + "\n" + "\n".join(lines[1:]) + "\n",
                                 "host key does not match"),
                                ("empty_known_hosts", "\n".join(lines[1:]) + "\n", "host key is not in")):
        path = staged.root / name
        path.write_text(text)
        staged.edit("deploy.toml", "[stages.sandbox]\n", f'[stages.sandbox]\nknown_hosts = "{name}"\n')
        refused = assert_clean_failure(staged.fab("status", db=False))
        assert "app1" in refused and message in refused and "refusing to connect" in refused
        assert path.read_text() == text  # nothing was accepted or added
        staged.edit("deploy.toml", f'[stages.sandbox]\nknown_hosts = "{name}"\n', "[stages.sandbox]\n")
