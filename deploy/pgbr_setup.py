"""`fab setup` for a stage whose backups.engine is "pgbackrest": the repository on the host of
the role "backup", WAL archiving on the database host, and SSH between the two.

pgBackRest on the repository host (as the deploy user) reaches the cluster as postgres on the
database host, and the database host's `archive_command` (as postgres) pushes WAL to the
repository as the deploy user. Each side gets its own key, made on the host (the private key
never travels), and a known_hosts file holding the other host's keys as this controller read
them over its own checked connection. Each side's `ssh` is wrapped to use only those files.
"""
from __future__ import annotations

import ipaddress
import json
import shlex
from pathlib import Path

from . import console, notify
from .backup_settings import PgBackRest
from .errors import DeployError
from .ssh.connection import Remote
from .stages import StageConfig, StageHost

DB_FOLDER = "/etc/pgbackrest/flask-deploy"          # on the database host, owned by postgres
HELPER = "/usr/local/sbin/flask-deploy-pgbackrest"   # deploy/servertool/pgbr_db.py, root-owned
HELPER_SOURCE = Path(__file__).resolve().parent / "servertool" / "pgbr_db.py"
HELPER_REGISTERED = "/etc/flask-deploy/pgbackrest-helper.json"  # the one stanza and cluster it serves
MARK = "flask-deploy-pgbackrest"                     # the comment that names our authorized_keys line
SSH_CONFIG = """\
# Written by fab setup: the ssh that pgBackRest uses, with this folder's key and known hosts only.
Host *
    IdentityFile {folder}/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile {folder}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 10
    ServerAliveInterval 10
"""


def repo_folder(stage: StageConfig) -> str:
    return f"{stage.deploy_to}/pgbackrest"


def option_values(pb: PgBackRest, root: Path) -> dict[str, str]:
    """[stages.S.backups.pgbackrest.options], a secret (`env:NAME` or `file:PATH`, an object store's
    key) read here: it is written only into the repository host's 0600 pgbackrest.conf."""
    values = {}
    for name, value in sorted(pb.options.items()):
        if value.startswith(("env:", "file:")):
            try:
                value = notify.resolve(value, root)
            except LookupError as exc:
                raise DeployError(f"[stages.S.backups.pgbackrest.options] {name}: {exc}",
                                  hint="set that variable (or write that file) where you run fab setup") from None
        values[name] = value
    return values


def repo_config(stage: StageConfig, pb: PgBackRest, db: StageHost, options: dict[str, str]) -> str:
    """The repository host's pgbackrest.conf (the deploy user's, 0600)."""
    folder = repo_folder(stage)
    lines = ["# Written by fab setup (deploy.toml [stages.S.backups.pgbackrest]); rewritten by each setup.",
             "[global]", f"repo1-path={folder}/repo", f"repo1-retention-full={pb.retention_full}",
             f"log-path={folder}/log", f"lock-path={folder}/lock", f"spool-path={folder}/spool",
             "log-level-console=warn", "log-level-file=info", f"cmd-ssh={folder}/ssh",
             f"compress-type={pb.compress_type}", f"process-max={stage.backups.jobs}", "start-fast=y",
             f"archive-timeout={pb.archive_timeout}",
             *(f"{name}={value}" for name, value in options.items()),
             "", f"[{pb.stanza}]", f"pg1-host={db.address}", f"pg1-host-port={db.port}", "pg1-host-user=postgres",
             f"pg1-path={pb.data_directory}", f"pg1-host-config={DB_FOLDER}/pgbackrest.conf",
             "pg1-host-cmd=/usr/bin/pgbackrest", ""]
    return "\n".join(lines)


def db_config(stage: StageConfig, pb: PgBackRest, repo: StageHost) -> str:
    """The database host's pgbackrest.conf (postgres's: archive-push, restore)."""
    return "\n".join([
        "# Written by fab setup; rewritten by each setup.", "[global]", f"repo1-host={repo.address}",
        f"repo1-host-port={repo.port}",
        f"repo1-host-user={stage.user}", f"repo1-host-config={repo_folder(stage)}/pgbackrest.conf",
        "repo1-host-cmd=/usr/bin/pgbackrest", f"cmd-ssh={DB_FOLDER}/ssh", "log-level-console=warn",
        "log-level-file=off", f"lock-path={DB_FOLDER}/lock", f"spool-path={DB_FOLDER}/spool",
        f"compress-type={pb.compress_type}", f"process-max={stage.backups.jobs}",
        f"archive-timeout={pb.archive_timeout}",
        # Asynchronous archiving: WAL files are pushed in batches over one connection, so a burst of
        # writes (a bulk load, a backfill) does not leave the archive minutes behind.
        "archive-async=y", "", f"[{pb.stanza}]", f"pg1-path={pb.data_directory}", ""])


def wrapper(folder: str) -> str:
    return f"#!/bin/sh\nexec /usr/bin/ssh -F {shlex.quote(folder + '/ssh_config')} \"$@\"\n"


def sudo_rule(user: str) -> str:
    """The deploy user's rule on the database host: the helper's point, restore and unwritten."""
    commands = ", ".join(f"{HELPER} {verb} *" for verb in ("point", "restore", "unwritten"))
    return (f"# /etc/sudoers.d/flask-deploy-{user}-pgbackrest: written by fab setup.\n"
            f"Defaults:{user} !requiretty\n{user} ALL=(root) NOPASSWD: {commands}\n")


def mark(stage: StageConfig) -> str:
    """The comment that names this stage's authorized_keys line (another stage's is left alone)."""
    return f"{MARK}-{stage.name}"


def authorized_line(public_key: str, from_address: str, comment: str) -> str:
    """The other side's key, able to run commands only (no forwarding, no terminal), and from an
    IP address only that address."""
    try:
        ipaddress.ip_address(from_address)
        where = f'from="{from_address}",'
    except ValueError:
        where = ""
    return f"{where}restrict {public_key.split()[0]} {public_key.split()[1]} {comment}\n"


def setup(stage: StageConfig, remotes: dict[str, Remote], restart_db: bool, root: Path) -> list[str]:
    """Configure both sides, create the stanza, check archiving; what was done, line by line."""
    pb = stage.backups.pgbackrest
    assert pb is not None
    if not stage.admin_user:
        raise DeployError("backups.engine \"pgbackrest\" is set up with the stage's admin account (it writes "
                          "PostgreSQL's archive settings and the postgres account's SSH files)",
                          hint="set admin_user and admin_key in the stage, then fab setup again")
    options = option_values(pb, root)
    db_host = next(h for h in stage.hosts if "db" in h.roles)
    repo_host = stage.backup_host
    repo = remotes[repo_host.name]
    db = Remote(stage, db_host, user=stage.admin_user, key=stage.admin_key)
    try:
        for remote in (repo, db):
            if remote.run(["sh", "-c", "command -v pgbackrest"], check=False).exited != 0:
                raise DeployError(f"{remote.name}: pgbackrest is not installed",
                                  hint=f"install it on {db_host.name} and {repo_host.name}: apt install pgbackrest")
        repo_key, db_key = _keys(stage, repo, db)
        repo_host_keys = repo.run(["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"]).stdout
        db_host_keys = db.run(["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"]).stdout
        _write_repo_side(stage, pb, repo, db_host, db_host_keys, db_key, options)
        _write_db_side(stage, pb, db, repo_host, repo_host_keys, repo_key)
        archive = run_helper(db, pb, "archive", *(["--restart"] if restart_db else []))
        notes = [f"{db_host.name}: WAL archiving to {repo_host.name} "
                 + ("on" if not archive["restart_needed"] else "set, but archive_mode stays off until PostgreSQL "
                    "restarts: run fab setup --restart-db at a quiet time")]
        _pgbackrest(stage, repo, pb, "stanza-create")
        if archive["restart_needed"]:
            return notes + [f"{repo_host.name}: stanza {pb.stanza} created; no backup can be taken before "
                            "archiving is on"]
        _pgbackrest(stage, repo, pb, "check")
        return notes + [f"{repo_host.name}: stanza {pb.stanza} ready, archiving checked"]
    finally:
        db.close()


def _keys(stage: StageConfig, repo: Remote, db: Remote) -> tuple[str, str]:
    """Each side's own key pair, made on the host when missing; the two public keys."""
    folder = repo_folder(stage)
    repo.run(["sh", "-c", 'umask 077 && mkdir -p "$1/repo" "$1/log" "$1/lock" "$1/spool" && chmod 0700 "$1" && '
              '{ test -e "$1/id_ed25519" || ssh-keygen -q -t ed25519 -N "" -C "$2" -f "$1/id_ed25519"; }',
              "keys", folder, f"{MARK}-{stage.name}-repository"])
    db.run(["sudo", "-n", "install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", DB_FOLDER,
            f"{DB_FOLDER}/lock", f"{DB_FOLDER}/spool"])
    db.run(["sudo", "-n", "-u", "postgres", "sh", "-c", 'test -e "$1/id_ed25519" || ssh-keygen -q -t ed25519 '
            '-N "" -C "$2" -f "$1/id_ed25519"', "keys", DB_FOLDER, f"{MARK}-{stage.name}-database"])
    repo_key = repo.run(["cat", f"{folder}/id_ed25519.pub"]).stdout.strip()
    db_key = db.run(["sudo", "-n", "cat", f"{DB_FOLDER}/id_ed25519.pub"]).stdout.strip()
    return repo_key, db_key


def known_hosts(host: StageHost, host_keys: str) -> str:
    """known_hosts lines for `host` as ssh looks it up: `[address]:port` when the port is not 22."""
    name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    return "".join(f"{name} {' '.join(line.split()[:2])}\n" for line in host_keys.splitlines() if line.strip())


def _write_repo_side(stage: StageConfig, pb: PgBackRest, repo: Remote, db_host: StageHost, db_host_keys: str,
                     db_key: str, options: dict[str, str]) -> None:
    folder = repo_folder(stage)
    files = {"known_hosts": known_hosts(db_host, db_host_keys), "ssh_config": SSH_CONFIG.format(folder=folder),
             "ssh": wrapper(folder), "pgbackrest.conf": repo_config(stage, pb, db_host, options)}
    for name, text in files.items():
        mode = "0700" if name == "ssh" else "0600"
        repo.run(["sh", "-c", 'cat > "$1.new" && chmod "$2" "$1.new" && mv "$1.new" "$1"', "write",
                  f"{folder}/{name}", mode], input=text)
    # The database host's postgres may log in here as the deploy user, for archive-push only.
    repo.run(["sh", "-c", 'umask 077 && mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && '
              '{ grep -v " $1$" ~/.ssh/authorized_keys || true; } > ~/.ssh/authorized_keys.new && cat >> '
              '~/.ssh/authorized_keys.new && mv ~/.ssh/authorized_keys.new ~/.ssh/authorized_keys', "authorize", mark(stage)],
             input=authorized_line(db_key, db_host.address, mark(stage)))


def _write_db_side(stage: StageConfig, pb: PgBackRest, db: Remote, repo_host: StageHost, repo_host_keys: str,
                   repo_key: str) -> None:
    files = {f"{DB_FOLDER}/known_hosts": (known_hosts(repo_host, repo_host_keys), "0600", "postgres"),
             f"{DB_FOLDER}/ssh_config": (SSH_CONFIG.format(folder=DB_FOLDER), "0600", "postgres"),
             f"{DB_FOLDER}/ssh": (wrapper(DB_FOLDER), "0755", "root"),
             f"{DB_FOLDER}/pgbackrest.conf": (db_config(stage, pb, repo_host), "0640", "postgres"),
             HELPER: (HELPER_SOURCE.read_text(), "0755", "root"),
             HELPER_REGISTERED: (json.dumps({"stanza": pb.stanza, "cluster": pb.cluster}) + "\n", "0644", "root")}
    for path, (text, mode, owner) in files.items():
        db.run(["sudo", "-n", "install", "-D", "-m", mode, "-o", owner, "-g", owner, "/dev/stdin", path], input=text)
    home = db.run(["sh", "-c", "getent passwd postgres | cut -d: -f6"]).stdout.strip() or "/var/lib/postgresql"
    db.run(["sudo", "-n", "-u", "postgres", "sh", "-c", 'umask 077 && mkdir -p "$1/.ssh" && touch "$1/.ssh/authorized_keys" '
            '&& { grep -v " $2$" "$1/.ssh/authorized_keys" || true; } > "$1/.ssh/authorized_keys.new" && cat >> '
            '"$1/.ssh/authorized_keys.new" && mv "$1/.ssh/authorized_keys.new" "$1/.ssh/authorized_keys"',
            "authorize", home, mark(stage)],
           input=authorized_line(repo_key, repo_host.address, mark(stage)))
    sudoers = f"/etc/sudoers.d/flask-deploy-{stage.user}-pgbackrest"
    db.run(["sudo", "-n", "sh", "-c", 'umask 337 && t="$1.new.$$" && cat > "$t" && visudo -cqf "$t" && mv "$t" "$1"',
            "sudoers", sudoers], input=sudo_rule(stage.user))


class HelperFailed(DeployError):
    """The helper refused or failed; `touched`: after it had stopped the cluster (a restore)."""

    def __init__(self, message: str, touched: bool = True, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.touched = touched


def run_helper(remote: Remote, pb: PgBackRest, verb: str, *args: str, timeout: float = 6 * 3600) -> dict:
    """The database host's helper, as root through sudo (the admin's, or the deploy user's rule); its JSON."""
    done = remote.run(["sudo", "-n", HELPER, verb, "--stanza", pb.stanza, "--cluster", pb.cluster, *args],
                      check=False, timeout=timeout)
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeployError(f"{remote.name}: {HELPER} {verb} exited with {done.exited}: "
                          f"{(done.stderr or done.stdout).strip()[-400:]}",
                          hint="fab setup (with the stage's admin_user) installs it and the sudo rule") from None
    if answer.get("ok") is False:
        raise HelperFailed(f"{remote.name}: {answer['error']}", touched=answer.get("touched", True))
    return answer


def _pgbackrest(stage: StageConfig, repo: Remote, pb: PgBackRest, command: str) -> None:
    done = repo.run(["pgbackrest", f"--config={repo_folder(stage)}/pgbackrest.conf", f"--stanza={pb.stanza}",
                     command], check=False, timeout=600)
    if done.exited != 0:
        lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
        raise DeployError(f"{repo.name}: pgbackrest {command} failed: {' / '.join(lines[-3:])[:600]}",
                          hint="fab setup again once the cause is fixed (docs/backups.md: pgBackRest)")
    console.say(f"  {repo.name}: pgbackrest {command} ok")
