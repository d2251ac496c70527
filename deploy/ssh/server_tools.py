"""The backup tool (deploy/servertool/) on a host, over SSH: each call refreshes its copy in
deploy_to/tools/ and runs it, in one command; the tool reads the server's env file itself
(as systemd does, never through a shell). The database password stays in that file; it is
never on a command line."""
from __future__ import annotations

import json

from ..errors import DeployError
from ..servertool import BOOT, ENTRY, sources
from ..stages import StageConfig
from .connection import HostError, Remote
from .layout import Layout

def run_tool(remote: Remote, layout: Layout, *args: str, check: bool = True, timeout: float = 3600):
    """The tool's command `args` on `remote`; its finished process (stdout is JSON or the check's table)."""
    return remote.run(["python3", "-c", BOOT, layout.tools, ENTRY, "--deploy-to", layout.root,
                       "--env-file", layout.env_file, *args], input=sources(), check=check, timeout=timeout)


def tool(remote: Remote, layout: Layout, *args: str, timeout: float = 3600, exits: tuple[int, ...] = (0,),
         refusals: bool = False) -> dict | list:
    """The tool's JSON answer (when it exits with one of `exits`); its {"ok": false, "error": ...}
    answers become a DeployError, unless `refusals` asks for them as answers."""
    done = run_tool(remote, layout, *args, check=False, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("ok") is False and "error" in answer and not refusals:
        raise DeployError(f"{remote.name}: {answer['error']}")
    if done.exited not in exits or answer is None:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise HostError(remote.name, f"the backup tool's `{args[0]}` exited with {done.exited}:\n{tail}",
                        output=done.stdout + done.stderr)
    return answer


def dump(remote: Remote, layout: Layout, stage: StageConfig, label: str, backup_id: str | None = None,
         release: str | None = None, prune: bool = True, live_releases: list[str] | None = None,
         content: bool = False) -> dict:
    """A backup with the stage's settings, then (`prune`) retention's pruning; its manifest (with "pruned").
    `content`: with the row digests that let a later restore prove nothing was written since."""
    args = stage.backups.dump_args(label) + ([] if prune else ["--keep", "0"]) + (["--content"] if content else [])
    args += ["--live-releases", ",".join(live_releases)] if live_releases is not None else []
    args += ["--id", backup_id] if backup_id else []
    args += ["--release", release] if release else []
    return tool(remote, layout, *args)


def manifests(remote: Remote, layout: Layout) -> list[dict]:
    return tool(remote, layout, "list")


def verify(remote: Remote, layout: Layout, backup_id: str) -> dict:
    return tool(remote, layout, "verify", backup_id)


def restore(remote: Remote, layout: Layout, stage: StageConfig, backup_id: str,
            unless_written: list[int] | None = None) -> dict:
    """pg_restore in place; with `unless_written` (the migration's xids), only if the tool proves,
    just before it starts, that nothing else wrote since the backup (else {"ok": false, "written": [...]})."""
    extra = ["--unless-written", "--xids", ",".join(map(str, unless_written))] if unless_written is not None else []
    return tool(remote, layout, "restore", backup_id, "--jobs", str(stage.backups.jobs), *extra, refusals=True)


def unwritten(remote: Remote, layout: Layout, backup_id: str, xids: list[int]) -> list[str]:
    """Why nothing-written-since-`backup_id` cannot be proven; [] when it is."""
    return tool(remote, layout, "unwritten", backup_id, "--xids", ",".join(map(str, xids)))["reasons"]


def end_migrations(remote: Remote, layout: Layout, advisory_key: int) -> list[int]:
    return tool(remote, layout, "end-migrations", str(advisory_key))["ended"]
