"""Running commands on this machine and inside a sandbox host, as root.

Every command is an argument list; shell scripts run inside a host are built
with shlex.join, so no value is ever spliced into a shell string unquoted.
"""
from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from ..errors import CommandFailed, DeployError
from .spec import Host

T = TypeVar("T")
R = TypeVar("R")

# Debian packages this machine needs to make the fleet: containers booted with
# systemd (systemd-nspawn), their image (debootstrap), and the ssh client.
PACKAGES = ("systemd-container", "debootstrap", "openssh-client", "iproute2", "util-linux", "git")
# The environment of a command run inside a host: its own PATH, nothing of this machine's.
HOST_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]


class SandboxError(DeployError):
    """The sandbox could not be made, repaired or removed."""


def run(argv: list[str], *, input: str | None = None, check: bool = True,
        timeout: float = 60, hint: str | None = None) -> subprocess.CompletedProcess:
    """Run `argv` on this machine; raise CommandFailed (with its output) when `check`."""
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, cwd="/")
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stdout + proc.stderr, hint=hint)
    return proc


def in_host(host: Host, argv: list[str], *, user: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run `argv` inside the running `host` (all of its namespaces), as root or `user`."""
    init = leader(host)
    if init is None:
        raise SandboxError(f"{host.name} is not running", hint="inv sandbox.up (repairs the fleet)")
    as_user = ["runuser", "-u", user, "--"] if user else []
    return run(["nsenter", f"--target={init}", "--all", "--", *HOST_ENV, *as_user, *argv], **kwargs)


def leader(host: Host) -> int | None:
    """The host's PID 1 (systemd) as this machine numbers it; None when it is not running."""
    for pid in pids_in(host):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        ns_pids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(ns_pids) == 2 and ns_pids[1] == "1":
            return pid
    return None


def script(commands: Iterable[list[str]]) -> list[str]:
    """One `sh -e` invocation running each argument list in turn."""
    return ["sh", "-ec", "\n".join(shlex.join(c) for c in commands)]


def parallel(items: list[T], work: Callable[[T], R]) -> list[R]:
    """`work` on every item at once (hosts are independent); first error re-raised."""
    if len(items) <= 1:
        return [work(i) for i in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(work, items))


def require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "the sandbox needs root (it makes network and mount namespaces)",
            hint="run it as root, e.g. `sudo .venv/bin/inv sandbox.up`",
        )


def ensure_packages() -> list[str]:
    """Install the Debian packages the sandbox needs; return the ones installed. One `up` at a
    time checks and installs (two test workers bring up their fleets together; dpkg has one lock)."""
    folder = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with open(folder / "flask-pg-deploy-packages.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install_missing()


def _install_missing() -> list[str]:
    query = run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *PACKAGES], check=False)
    installed = {line.split()[0] for line in query.stdout.splitlines() if line.endswith(" installed")}
    missing = [pkg for pkg in PACKAGES if pkg not in installed]
    if not missing:
        return []
    if not shutil.which("apt-get"):
        raise SandboxError(f"missing packages: {', '.join(missing)}", hint="install them and run again")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        run(["apt-get", "update", "-q"], timeout=300)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise CommandFailed(install, proc.returncode, proc.stdout + proc.stderr,
                                hint="install the packages by hand and run again")
    return missing


def write_file(path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> None:
    """Write `text` to `path` with `mode` from the start (no window with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    if owner:
        shutil.chown(path, owner, owner)


def pids_in(host: Host) -> list[int]:
    """Every process inside the host's network namespace (what `ip netns pids` reports)."""
    proc = run(["ip", "netns", "pids", host.netns], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def process_info(pid: int) -> tuple[str, int] | None:
    """(command name, uid) of a process, or None when it is gone."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
    return comm, uid


def mount_points() -> list[str]:
    """Mount points of this process's mount namespace, in mount order."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point))
    return points


def umount_under(folder: Path) -> None:
    """Unmount everything at or below `folder`, innermost first; raise when something stays
    mounted (removing the folder would then reach into what is mounted there)."""
    inside = lambda: [p for p in mount_points() if p == str(folder) or p.startswith(f"{folder}/")]  # noqa: E731
    for point in reversed(inside()):
        run(["umount", "--lazy", point], check=False)
    if inside():
        raise SandboxError(f"still mounted under {folder}: {', '.join(inside())}",
                           hint="unmount them by hand, then run the command again")
