"""The pgbackrest engine from the controller: `fab backup` and `fab backups` for a stage whose
backups.engine is "pgbackrest", and the deploy's pre-migration safety point. pgBackRest runs
on the repository host (the server tool's pgbr-* commands) and, for what needs the postgres
account, on the database host through its one helper (servertool/pgbr_db.py).
`fab restore` for this engine is in pgbr_restore.py; `fab backups.check` is the same verb as
for pgdump (the server tool's pgbr-check).
"""
from __future__ import annotations

import json

from . import console
from .backup_settings import PgBackRest
from .config import ProjectConfig
from .errors import DeployError
from .pgbr_setup import run_helper
from .ssh import lock, server_tools
from .ssh.connection import Remote, connect
from .ssh.layout import Layout
from .stages import StageConfig, load_stage

KINDS = ("full", "diff", "incr")


def settings(stage: StageConfig) -> PgBackRest:
    assert stage.backups.pgbackrest is not None
    return stage.backups.pgbackrest


def db_host(stage: StageConfig):
    return next(h for h in stage.hosts if "db" in h.roles)


def repo_tool(stage: StageConfig, remotes: dict[str, Remote], command: str, *args: str, **kw) -> dict:
    """The server tool's pgbr-`command` on the repository host."""
    return server_tools.tool(remotes[stage.backup_host.name], Layout(stage.deploy_to), f"pgbr-{command}",
                             "--stanza", settings(stage).stanza, *args, **kw)


def helper(stage: StageConfig, remotes: dict[str, Remote], verb: str, *args: str) -> dict:
    """The database host's helper as the deploy user runs it (its sudo rule); its JSON answer."""
    return run_helper(remotes[db_host(stage).name], settings(stage), verb, *args)


def backup(project: ProjectConfig, stage_name: str | None, kind: str = "diff") -> dict:
    """A pgBackRest backup (full, diff or incr; the first is always full) on the repository host."""
    if kind not in KINDS:
        raise DeployError(f"--type must be one of {', '.join(KINDS)}, got {kind[:40]!r}")
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        migrator = remotes[stage.migrations_host.name]
        holder = lock.holder("backup", kind)
        lock.acquire(migrator, layout, holder, stage.name)  # never beside a deploy's or a restore's change
        with lock.kept(migrator, layout, holder):
            made = repo_tool(stage, remotes, "backup", "--type", kind)
    console.ok(f"backup {made['id']} ({made['type']}): database {made['size']} bytes, {made['repo_size']} bytes "
               f"added to the repository, in {made['seconds']}s")
    return made


def listed(found: dict) -> list[dict]:
    """The backups and restore points as one list, oldest first, in the shape of the pgdump
    engine's `fab backups --json`: each entry has a kind, an engine, a UTC time and an id that
    `fab restore ID` takes (a point's id is its name)."""
    entries = [{"kind": "backup", **b} for b in found["backups"]]
    entries += [{"kind": "point", "engine": "pgbackrest", "id": p["name"], **p, "exact_time": p["time"],
                 "time": p["time"][:19].replace(" ", "T") + "Z"} for p in found["points"]]
    return sorted(entries, key=lambda e: e["time"])


def list_backups(project: ProjectConfig, stage_name: str | None, as_json: bool = False) -> list[dict]:
    """The repository's backups and the restore points made by deploys and restores."""
    stage = load_stage(project, stage_name)
    with connect(stage) as remotes:
        found = repo_tool(stage, remotes, "list")
    entries = listed(found)
    if as_json:
        console.say(json.dumps(entries, indent=2))
        return entries
    for b in found["backups"]:
        console.say(f"{b['id']:<32} {b['type']:<5} {b['time']:<21} {b['size']:>12} B  repo {b['repo_size']:>12} B  "
                    f"WAL {b['wal_start']}..{b['wal_stop']}" + ("  ERROR" if b["error"] else ""))
    if not found["backups"]:
        console.say(f"no backup in the repository of {stage.name} yet: fab backup --stage {stage.name}")
    for p in found["points"][-10:]:
        console.say(f"  restore point {p['name']:<40} {p['time'][:19]}  release {p.get('release') or '-'}  "
                    f"timeline {p['timeline']}")
    return entries


def safety_point(stage: StageConfig, remotes: dict[str, Remote], name: str, release: str | None) -> dict:
    """A named restore point, made before a migration or a restore, in constant time: the point is
    written into the WAL, then the repository is proven ready (a backup no older than
    crit_age_hours before it, and the archive taking WAL: the point's own file reaches it)."""
    point = helper(stage, remotes, "point", name)
    ready = repo_tool(stage, remotes, "ready", "--crit-age-hours", f"{stage.backups.crit_age_hours:g}",
                      "--lsn", point["lsn"], "--timeline", str(point["timeline"]))
    point.update(engine="pgbackrest", id=name, release=release, base_backup=ready["backup"],
                 target_timeline=ready["target_timeline"], archive_check_seconds=ready["archive_check_seconds"])
    repo_tool(stage, remotes, "point", json.dumps(point))
    return point
