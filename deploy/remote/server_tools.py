"""The backup tool (deploy/server/) on a host, over SSH: each call refreshes its copy in
deploy_to/tools/ and runs it, in one command; the tool reads the server's env file itself
(as systemd does, never through a shell). The database password stays in that file; it is
never on a command line."""
from __future__ import annotations

import json

from ..errors import DeployError
from ..server import BOOT, ENTRY, sources
from ..stages import StageConfig
from .connection import HostError, Remote
from .layout import Layout

def run_tool(remote: Remote, layout: Layout, *args: str, check: bool = True, timeout: float = 3600):
    """The tool's command `args` on `remote`; its finished process (stdout is JSON or the check's table)."""
    return remote.run(["python3", "-c", BOOT, layout.tools, ENTRY, "--deploy-to", layout.root,
                       "--env-file", layout.env_file, *args], input=sources(), check=check, timeout=timeout)


def tool(remote: Remote, layout: Layout, *args: str, timeout: float = 3600, exits: tuple[int, ...] = (0,)) -> dict | list:
    """The tool's JSON answer (when it exits with one of `exits`); its {"ok": false, "error": ...}
    answers become a DeployError."""
    done = run_tool(remote, layout, *args, check=False, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("ok") is False and "error" in answer:
        raise DeployError(f"{remote.name}: {answer['error']}")
    if done.exited not in exits or answer is None:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise HostError(remote.name, f"the backup tool's `{args[0]}` exited with {done.exited}:\n{tail}",
                        output=done.stdout + done.stderr)
    return answer


def dump(remote: Remote, layout: Layout, stage: StageConfig, label: str, backup_id: str | None = None,
         release: str | None = None, prune: bool = True, live_releases: list[str] | None = None) -> dict:
    """A backup with the stage's settings, then (`prune`) retention's pruning; its manifest (with "pruned")."""
    args = stage.backups.dump_args(label) + ([] if prune else ["--keep", "0"])
    args += ["--live-releases", ",".join(live_releases)] if live_releases is not None else []
    args += ["--id", backup_id] if backup_id else []
    args += ["--release", release] if release else []
    return tool(remote, layout, *args)


def manifests(remote: Remote, layout: Layout) -> list[dict]:
    return tool(remote, layout, "list")


def verify(remote: Remote, layout: Layout, backup_id: str) -> dict:
    return tool(remote, layout, "verify", backup_id)


def restore(remote: Remote, layout: Layout, stage: StageConfig, backup_id: str) -> dict:
    return tool(remote, layout, "restore", backup_id, "--jobs", str(stage.backups.jobs))


def revisions(remote: Remote, layout: Layout) -> list[str]:
    return tool(remote, layout, "revision")["revisions"]


def writes(remote: Remote, layout: Layout) -> int:
    return tool(remote, layout, "writes")["writes"]


def end_migrations(remote: Remote, layout: Layout, advisory_key: int) -> list[int]:
    return tool(remote, layout, "end-migrations", str(advisory_key))["ended"]
