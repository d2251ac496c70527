"""Running commands on this machine and inside a sandbox host, as root.

Every command is an argument list; shell scripts run inside a host are built
with shlex.join, so no value is ever spliced into a shell string unquoted.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from ..errors import CommandFailed, DeployError
from .spec import Host

T = TypeVar("T")
R = TypeVar("R")

# Debian packages the hosts need: what a plain Debian server with sshd, sudo,
# git and Python has (python3-venv: the release environments are made there).
PACKAGES = ("openssh-server", "openssh-client", "sudo", "iproute2", "util-linux", "git", "python3-venv")


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
    """Run `argv` inside `host` (its network, mounts and hostname), as root or `user`."""
    as_user = ["runuser", "-u", user, "--"] if user else []
    return run([*host.nsenter(), *as_user, *argv], **kwargs)


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
    """Install the Debian packages the sandbox needs; return the ones installed."""
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
