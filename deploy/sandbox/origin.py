"""The git origin the hosts deploy from: a bare repository on this machine, served
read-only by `git daemon` on this machine's sandbox address. Commits get there by
`git push <path> HEAD:refs/heads/NAME` from any clone on this machine."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DeployError
from ..local.git import git, is_repository, resolve_commit
from .spec import GIT_PORT, Sandbox
from .system import run


def ensure_repository(sandbox: Sandbox) -> bool:
    """The bare repository; False when it exists."""
    if (sandbox.origin / "HEAD").exists():
        return False
    run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(sandbox.origin)])
    return True


def daemon_pid(sandbox: Sandbox) -> int | None:
    try:
        pid = int(sandbox.git_daemon_pid.read_text())
        if "git-daemon" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "):
            return pid
    except (OSError, ValueError):
        pass
    return None


def ensure_daemon(sandbox: Sandbox) -> bool:
    """Serve the origin on the sandbox address; False when it is served already."""
    if daemon_pid(sandbox):
        return False
    run(["git", "daemon", "--detach", "--reuseaddr", "--informative-errors",
         f"--listen={sandbox.gateway}", f"--port={GIT_PORT}", f"--pid-file={sandbox.git_daemon_pid}",
         f"--base-path={sandbox.state_dir}", "--export-all", str(sandbox.origin)])
    return True


def stop_daemon(sandbox: Sandbox) -> None:
    """Stop the daemon, and any left by a sandbox of this address whose state was lost."""
    listen = f"--listen={sandbox.gateway}"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        is_daemon = argv[0].endswith(b"git-daemon") or argv[1:2] == [b"daemon"]
        if is_daemon and listen.encode() in argv:
            os.kill(int(proc.name), 15)
    sandbox.git_daemon_pid.unlink(missing_ok=True)


def push_head(sandbox: Sandbox, checkout: Path, branch: str = "main") -> str | None:
    """Push the checkout's HEAD to the origin's `branch`; the commit, or None without one."""
    if not is_repository(checkout):
        return None
    try:
        head = resolve_commit(checkout, "HEAD")
    except DeployError:
        return None  # a repository without commits yet
    git(checkout, "push", "--quiet", "--force", str(sandbox.origin), f"HEAD:refs/heads/{branch}")
    return head
