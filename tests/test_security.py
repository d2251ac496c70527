"""No secret leaks, secrets stay private, and no user-supplied value runs as a command:
checked on the sandbox fleet after real deploys, failures and backups."""
from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import GOOD_MIGRATION, add_migration, command_lines, deploy, health, pids_running, sql, ssh

from bench.scratch import add_column_migration
from deploy.sandbox import dbhost
from deploy.sandbox.system import in_host

pytestmark = pytest.mark.timeout(300)


def env_secret(project) -> tuple[str, str]:
    """The server env file's text and the database password in it."""
    text = ssh(project, "app1", "cat /srv/app/shared/env").stdout
    password = text.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert len(password) >= 16, "the sandbox's password is long enough to grep for"
    return text, password


class CommandLines(threading.Thread):
    """Every process command line seen on the machine while running (the hosts share its process table)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.seen.update(command_lines().values())

    def stop(self) -> set[str]:
        self.done.set()
        self.join(timeout=30)
        return self.seen


def test_no_secret_in_command_lines_output_logs_journal_plans_errors_traces_or_manifests(deployed, tmp_path):
    env_text, password = env_secret(deployed)
    token = "tok-" + password[::-1]  # a new secret, set with fab env.set
    trace = tmp_path / "trace.jsonl"
    traced = {"FLASK_DEPLOY_TRACE": str(trace)}
    watcher = CommandLines()
    watcher.start()
    try:
        add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
        runs = [deployed.fab("deploy", "--dry-run", db=False, env=traced), deploy(deployed),
                deployed.fab("backup", "--label", "sweep", "--download", str(tmp_path / "dl"), db=False, env=traced),
                deployed.fab("backups", "--json", db=False), deployed.fab("status", "--json", db=False)]
        failing = add_column_migration("f00dfa11beef", "a0d0a0d0beef", "note", "add a note, then fail",
                                       then='op.execute("SELECT 1 / 0")')
        add_migration(deployed, failing, "f00dfa11beef_fail.py")
        failed = deployed.fab("deploy", db=False, env=traced)
        assert failed.returncode == 1, output(failed)
        runs += [failed, deployed.fab("rollback", db=False, env=traced)]
        runs += [deployed.fab("env.set", "APP_TOKEN", db=False, env=traced, input=token + "\n"),
                 deployed.fab("env", db=False), deployed.fab("env.diff", db=False),
                 deployed.fab("logs", "--lines", "300", db=False)]
        assert all(r.returncode == 0 for r in runs[-4:]), [output(r) for r in runs[-4:]]
    finally:
        lines = watcher.stop()
    assert any("pg_dump" in line for line in lines) and any("flask" in line for line in lines)
    texts = {"command lines": "\n".join(lines), "fab output": "\n".join(output(r) for r in runs),
             "trace": trace.read_text()}
    for host in ("app1", "app2"):
        texts[f"{host} files"] = ssh(deployed, host, "cat /srv/app/deploy.log /srv/app/releases/*/.release.json "
                                                     "/srv/app/backups/*.json /srv/app/backups/*/*.json "
                                                     "/srv/app/metrics/*.prom 2>/dev/null; journalctl -u app.service").stdout
    assert token in ssh(deployed, "app2", "cat /srv/app/shared/env").stdout, "the sweep looks for a secret that was set"
    texts["downloaded manifest"] = "\n".join(p.read_text() for p in (tmp_path / "dl").glob("*.json"))
    assert texts["downloaded manifest"] and "a0d0a0d0beef" in texts["app1 files"]
    for name, text in texts.items():
        assert password not in text, f"the database password is in the {name}"
        assert token not in text, f"the secret set with fab env.set is in the {name}"
        for line in env_text.splitlines():
            assert line not in text, f"the env file's line is in the {name}"


def test_secrets_are_0600_backups_0600_in_0700_folders_and_the_app_runs_unprivileged(deployed):
    assert deployed.fab("backup", db=False).returncode == 0
    for host in ("app1", "app2"):
        modes = ssh(deployed, host, "stat -c '%a %U %n' /srv/app/shared /srv/app/shared/env").stdout.split("\n")
        assert modes[:2] == ["700 deploy /srv/app/shared", "600 deploy /srv/app/shared/env"], modes
    found = ssh(deployed, "app1", "find /srv/app/backups -printf '%m %u %y\\n' | sort -u").stdout.split("\n")
    assert sorted(filter(None, found)) == ["600 deploy f", "700 deploy d"], found
    served = pids_running(deployed.sandbox, "gunicorn", "--config")  # masters and workers alike
    assert served, "no gunicorn running"
    uids = set()
    for pid in served:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # ended meanwhile
        uids.add(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))
    assert uids and "0" not in uids, uids


MARKER = "/tmp/pwned-{}"


def injected(field: str) -> list[str]:
    """Values for `field` that would create a marker file if any shell ran them."""
    marker = MARKER.format(field)
    return [f"$(touch {marker})", f"`touch {marker}`", f"x; touch {marker}", f"x | touch {marker}",
            f"x\ntouch {marker}", f"--x=$(touch {marker})"]


def test_metacharacters_in_every_user_supplied_field_run_nothing_anywhere(deployed, tmp_path):
    release = deployed.first_release
    calls = []
    for value in injected("ref"):
        calls.append(("deploy", "--ref", value))
    for value in injected("stage"):
        calls.append(("status", "--stage", value))
    for value in injected("to"):
        calls.append(("rollback", "--to", value))
    for value in injected("label"):
        calls.append(("backup", "--label", value))
    for value in injected("backup"):
        calls.append(("restore", value))
    for value in injected("download"):
        calls.append(("backup", "--download", str(tmp_path / value)))
    for argv in calls:
        proc = deployed.fab(*argv, db=False)
        if argv[:2] != ("backup", "--download"):
            assert_clean_failure(proc)
    for host in ("app1", "app2", "db"):
        assert ssh(deployed, host, "ls /tmp/pwned-* 2>/dev/null; true").stdout == "", host
    assert not list(Path("/tmp").glob("pwned-*"))
    assert ssh(deployed, "app1", "basename $(readlink /srv/app/current)").stdout.strip() == release
    assert json.loads(deployed.fab("status", "--json", db=False).stdout)["lock"] is None


def test_no_code_path_accepts_unknown_host_keys_outside_the_sandbox_set_up():
    """Only RejectPolicy with the stage's known_hosts: no auto-accepting policy, no
    StrictHostKeyChecking=no, no ssh-keyscan, anywhere but the sandbox's own set-up
    (which writes the known_hosts of the servers it made itself)."""
    root = Path(__file__).resolve().parent.parent
    sources = [p for p in [*root.glob("deploy/**/*.py"), root / "fabfile.py", root / "tasks.py", *root.glob("bench/**/*.py")]
               if "sandbox" not in p.relative_to(root).parts]
    assert len(sources) > 30
    for path in sources:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for accepting in ("AutoAddPolicy()", "WarningPolicy()", "accept-new", "ssh-keyscan "):
            assert accepting not in code, f"{path.relative_to(root)} uses {accepting}"
        checking = re.findall(r"StrictHostKeyChecking[ =]+(\w+)", code)  # the pgbackrest hosts' own ssh_config
        assert set(checking) <= {"yes"}, f"{path.relative_to(root)} sets StrictHostKeyChecking {checking}"
    assert "RejectPolicy()" in (root / "deploy" / "ssh" / "connection.py").read_text()


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


NASTY_PASSWORD = "a$b;c&d'e\"f g#h`id`"  # what a shell would expand, split, run or cut at a comment


def set_database_password(sandbox, password: str) -> None:
    """The app role's password, and every host's env file with its URL, unquoted as an
    operator writes it (systemd reads it verbatim; `sh`'s `.` would run part of it)."""
    url = sandbox.database_url_template.format(password=quote(password, safe="$;&'\"`"))
    dbhost.psql(sandbox.db, f"ALTER ROLE app PASSWORD '{dbhost.scram_verifier(password)}';")
    for host in sandbox.hosts:
        in_host(host, ["sh", "-c", 'umask 077 && cat > "$1"', "env", "/srv/app/shared/env"], user="deploy",
                input=f"DATABASE_URL={url}\n")


def test_a_password_with_shell_metacharacters_works_for_the_app_deploy_backup_check_and_restore(deployed):
    sandbox = deployed.sandbox
    set_database_password(sandbox, NASTY_PASSWORD)
    try:
        for host in ("app1", "app2"):
            assert ssh(deployed, host, "sudo -n systemctl restart app.service").returncode == 0
        add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
        deployed_ = deploy(deployed)
        assert deployed_.returncode == 0, output(deployed_)
        assert health(deployed, "app2")["revision"] == "a0d0a0d0beef"  # the app (systemd's reading) connects
        backup = deployed.fab("backup", "--label", "nasty", db=False)
        assert backup.returncode == 0, output(backup)
        backup_id = backup.stdout.split("backup ", 1)[1].split(":", 1)[0]
        check = deployed.fab("backups.check", "--restore-test", db=False)
        assert check.returncode == 0, output(check)
        restored = deployed.fab("restore", backup_id, db=False)
        assert restored.returncode == 0, output(restored)
        assert sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards") == "kept,also kept"
    finally:
        set_database_password(sandbox, dbhost.password(sandbox))


def test_the_deploy_user_gets_no_pager_as_root_and_its_key_does_not_open_the_admin_account(staged):
    pager = ssh(staged, "app1", "sudo -n systemctl status app.service")  # on a terminal: less, as root
    assert pager.returncode != 0 and "password is required" in pager.stderr, pager
    no_pager = ssh(staged, "app1", "sudo -n systemctl --no-pager is-active app.service")
    assert "password is required" not in no_pager.stderr, no_pager
    sandbox = staged.sandbox
    as_admin = ["ssh", "-F", str(sandbox.ssh_config), "-l", "deploy-admin"]
    with_deploy_key = subprocess.run([*as_admin, "app1", "true"], capture_output=True, text=True, timeout=60)
    assert with_deploy_key.returncode == 255 and "Permission denied" in with_deploy_key.stderr, with_deploy_key
    with_admin_key = subprocess.run([*as_admin, "-o", "IdentityFile=" + str(sandbox.admin_key), "app1", "true"],
                                    capture_output=True, text=True, timeout=60)
    assert with_admin_key.returncode == 0, with_admin_key.stderr
