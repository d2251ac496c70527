"""`fab backup`, `fab backups`, `fab backups.check`: logical backups of the stage's
database, taken and kept on its backup host by the server-side tool (deploy/servertool).
`fab restore` is in restore.py."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import console, events, notify, pgbr
from .config import ProjectConfig
from .errors import BackupCheckFailed, DeployError
from .ssh import build, lock, server_tools, service
from .ssh.connection import HostError, Remote, connect
from .ssh.layout import Layout
from .servertool import reports
from .servertool.digests import checksums
from .stages import StageConfig, load_stage

BACKUP_ID = re.compile(r"\d{14}-[A-Za-z0-9_.-]{1,60}")
LABEL = re.compile(r"[A-Za-z0-9_-]{1,40}")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")  # a file inside a directory-format dump


def check_id(backup_id: str) -> str:
    if not BACKUP_ID.fullmatch(backup_id) or ".." in backup_id:
        raise DeployError(f"{backup_id[:80]!r} is not a backup id", hint="fab backups --stage STAGE lists them")
    return backup_id


def backup(project: ProjectConfig, stage_name: str | None, label: str | None = None,
           download: str | None = None, kind: str | None = None) -> dict:
    """A pg_dump of the stage's database on its backup host, with its manifest, then pruning
    (the stage's retention); optionally copied here. With the pgbackrest engine, a pgBackRest
    backup of `kind` (full, diff, incr)."""
    if label is not None and not LABEL.fullmatch(label):
        raise DeployError(f"--label must be 1-40 letters, digits, '-' or '_', got {label[:60]!r}")
    stage = load_stage(project, stage_name)
    if stage.backups.engine == "pgbackrest":
        if label or download:
            raise DeployError("--label and --download are for pg_dump backups; this stage's engine is pgbackrest",
                              hint="fab backup --type full|diff|incr")
        return pgbr.backup(project, stage.name, kind or "diff")
    if kind:
        raise DeployError("--type is for the pgbackrest engine; this stage's backups are pg_dumps")
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        remote = remotes[stage.backup_host.name]
        migrator = remotes[stage.migrations_host.name]
        holder = lock.holder("backup", label)
        lock.acquire(migrator, layout, holder, stage.name)  # never beside a deploy's migration or a restore
        with lock.kept(migrator, layout, holder):  # (an unfinished deploy does not stop a backup: it helps)
            manifest = take(stage, remotes, label or "manual")
        console.ok(f"backup {manifest['id']}: {manifest['size']} bytes in {manifest['duration']}s, revision "
                   f"{manifest['revision']}, sha256 {manifest['sha256'][:12]}")
        say_pruned(manifest)
        if download:
            fetch(remote, layout, manifest, Path(download))
        return manifest


def take(stage: StageConfig, remotes: dict[str, Remote], label: str, backup_id: str | None = None,
         release: str | None = None, prune: bool = True, content: bool = False) -> dict:
    """A backup on the stage's backup host. A host other than the migrations host has no
    releases of its own: it is told which can still be rolled back to, for retention."""
    layout = Layout(stage.deploy_to)
    live = None
    if prune and stage.backup_host != stage.migrations_host:
        listed = build.list_releases(remotes[stage.migrations_host.name], layout)
        live = [r["id"] for r in listed if r.get("status") != "failed"]
    if release is None and "app" not in stage.backup_host.roles:  # it serves nothing: ask a host that does
        release = service.current_release(remotes[stage.app_hosts[0].name], layout)
    return server_tools.dump(remotes[stage.backup_host.name], layout, stage, label, backup_id, release, prune, live,
                             content)


def say_pruned(manifest: dict, say=console.say) -> None:
    if manifest.get("prune_error"):
        say(f"  warning: retention did not run: {manifest['prune_error']}")
    if manifest.get("pruned"):
        say(f"  retention removed {len(manifest['pruned'])} older backup(s): {', '.join(manifest['pruned'])}")


def fetch(remote: Remote, layout: Layout, manifest: dict, folder: Path) -> Path:
    """Copy a backup and its manifest here; the sha256 is checked after the transfer.

    The manifest comes from the server, so its id and file names are checked to be plain
    names before they make a path: nothing is written outside `folder`. Every file is
    created 0600 (and never over an existing one or through a link) before a byte is written.
    """
    backup_id = check_id(str(manifest.get("id", "")))
    names = sorted(manifest.get("files", {}))
    unsafe = [n for n in names if not SAFE_NAME.fullmatch(n) or n in (".", "..")]
    if unsafe:
        raise DeployError(f"the manifest of {backup_id} names files that are not plain file names: "
                          f"{', '.join(repr(n[:60]) for n in unsafe[:3])}; nothing was downloaded",
                          hint="inspect the backup host: someone may have tampered with its backups")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    local = folder / f"{backup_id}.dump"
    source = f"{layout.backups}/{backup_id}.dump"
    if names:
        try:
            local.mkdir(mode=0o700)
        except FileExistsError:
            raise DeployError(f"{local} already exists: not overwritten", hint="download into an empty folder") from None
    for remote_path, target in ([(f"{source}/{n}", local / n) for n in names] or [(source, local)]) + [
            (f"{layout.backups}/{backup_id}.json", folder / f"{backup_id}.json")]:
        _download(remote, remote_path, target)
    digest, _ = checksums(str(local))
    if digest != manifest["sha256"]:
        raise DeployError(f"the downloaded {local.name} does not match its sha256 ({digest[:12]} != "
                          f"{manifest['sha256'][:12]})", hint="download it again")
    console.ok(f"downloaded to {local} (sha256 checked)")
    return local


def _download(remote: Remote, remote_path: str, target: Path) -> None:
    """One file, into a new 0600 file (O_EXCL, O_NOFOLLOW): private while it is written."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise DeployError(f"{target} already exists: not overwritten", hint="download into an empty folder") from None
    try:
        with os.fdopen(fd, "wb") as out:
            remote.get(remote_path, out)
    except HostError as exc:
        target.unlink(missing_ok=True)
        raise DeployError(str(exc), hint="download it again") from None
    except BaseException:  # Ctrl-C: no partial file left either
        target.unlink(missing_ok=True)
        raise


def list_backups(project: ProjectConfig, stage_name: str | None, as_json: bool = False) -> list[dict]:
    stage = load_stage(project, stage_name)
    if stage.backups.engine == "pgbackrest":
        return pgbr.list_backups(project, stage.name, as_json)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        remote = remotes[stage.backup_host.name]
        found = [{"kind": "backup", "engine": "pgdump", **m} for m in server_tools.manifests(remote, layout)]
        if as_json:
            console.say(json.dumps(found, indent=2))
            return found
        for m in found:
            checked = m.get("verified")
            verdict = "never verified" if not checked else ("ok" if checked.get("ok") else "FAILED") + " " + checked.get("time", "")
            console.say(f"{m['id']:<40} {m['time']:<21} {m['size']:>10} B  {m.get('format', '?'):<9} "
                        f"rev {m.get('revision')}  release {m.get('release')}  {verdict}")
        return found


def check(project: ProjectConfig, stage_name: str | None, as_json: bool = False,
          restore_test: bool | None = None) -> dict:
    """The scheduled check, run now from here: the same tool and settings as the check timer,
    so it also writes the history and the Prometheus file. Exits 0, 1 or 2."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        remote = remotes[stage.backup_host.name]
        forced = [] if restore_test is None else ["--restore-test" if restore_test else "--no-restore-test"]
        report = server_tools.tool(remote, layout, *stage.backups.check_args(), "--json", *forced, exits=(0, 1, 2))
        if as_json:
            console.say(json.dumps(report, indent=2))
        else:
            console.say(reports.table(report))
        if report["status"]:
            failing = [f"{c['check']} {c['state']}" for c in report["checks"] if c["status"]]
            notify.post(stage.notify, project.root, "backup_check", events.event(
                "backup check", stage, report["state"], ", ".join(failing), backup=report.get("backup")))
            raise BackupCheckFailed(f"backup check {report['state']}: {', '.join(failing)}", report["status"],
                                    hint=f"fab backups --stage {stage.name}; a fresh backup: fab backup --stage {stage.name}")
        return report
