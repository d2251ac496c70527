"""Finding the machine's PostgreSQL server binaries and running them as a non-root user."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from ..errors import CommandFailed, DatabaseError

# PostgreSQL refuses to run as root; as root, the cluster belongs to this user.
SERVICE_USER = "postgres"


def find_bindir() -> Path:
    """PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else initdb on PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise DatabaseError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found",
        hint="apt-get install postgresql-15, or set PG_BINDIR to the folder holding initdb",
    )


def running_as_root() -> bool:
    return os.geteuid() == 0


def ensure_service_user() -> str:
    """As root: the system user that will own the cluster, created if missing."""
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
        )
    return SERVICE_USER


def give_to_service_user(path: Path) -> None:
    """As root, hand a folder to the cluster's user; otherwise nothing to do."""
    if running_as_root():
        user = pwd.getpwnam(ensure_service_user())
        os.chown(path, user.pw_uid, user.pw_gid)


def as_cluster_owner(argv: list[str]) -> list[str]:
    """`argv` as the cluster's owner: itself, or under runuser when we are root."""
    if running_as_root():
        return ["runuser", "-u", ensure_service_user(), "--", *argv]
    return argv


def run_pg(argv: list[str], *, hint: str | None = None, timeout: float = 120) -> str:
    """Run a PostgreSQL binary as the cluster owner; raise CommandFailed on failure."""
    full = as_cluster_owner(argv)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stdout + proc.stderr, hint=hint)
    return proc.stdout


def check_owner_can_reach(path: Path) -> None:
    """As root, fail early when the cluster's user cannot reach `path` (a 0700 parent, say)."""
    if not running_as_root():
        return
    probe = subprocess.run(as_cluster_owner(["test", "-w", str(path)]), capture_output=True)
    if probe.returncode != 0:
        blocked = next(
            (p for p in reversed(path.parents) if not os.stat(p).st_mode & 0o001),
            path,
        )
        raise DatabaseError(
            f"the {SERVICE_USER} user cannot reach {path} (PostgreSQL will not run as root, "
            f"and {blocked} is closed to other users)",
            hint=f"chmod o+x {blocked}, or set database_dir in deploy.toml to a reachable folder",
        )
