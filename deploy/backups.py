"""`fab backup`, `fab backups`, `fab backups.check`, `fab restore`: logical backups of the
stage's database, taken and kept on its backup host by the server-side tool
(deploy/server), and a restore that refuses an unverified backup, takes a safety
backup first, stops the app while it runs and puts the safety backup back if the
restore fails."""
from __future__ import annotations

import getpass
import json
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import console, pipeline
from .config import ProjectConfig
from .errors import BackupCheckFailed, DeployError
from .remote import build, deploylog, guard, lock, server_tools, service
from .remote.connection import Remote, StageRemotes, connect, on_hosts
from .remote.layout import Layout
from .server import reports
from .server.digests import checksums
from .stages import StageConfig, load_stage

BACKUP_ID = re.compile(r"\d{14}-[A-Za-z0-9_.-]{1,60}")
LABEL = re.compile(r"[A-Za-z0-9_-]{1,40}")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")  # a file inside a directory-format dump


def _serving(remote: Remote, layout: Layout) -> str:
    release = service.current_release(remote, layout)
    if not release:
        raise DeployError(f"{remote.name} has no current release: a restore brings the app back and checks it",
                          hint="fab deploy first")
    return release


def _check_id(backup_id: str) -> str:
    if not BACKUP_ID.fullmatch(backup_id) or ".." in backup_id:
        raise DeployError(f"{backup_id[:80]!r} is not a backup id", hint="fab backups --stage STAGE lists them")
    return backup_id


def backup(project: ProjectConfig, stage_name: str | None, label: str | None = None,
           download: str | None = None) -> dict:
    """A pg_dump of the stage's database on its backup host, with its manifest, then pruning
    (the stage's retention); optionally copied here."""
    if label is not None and not LABEL.fullmatch(label):
        raise DeployError(f"--label must be 1-40 letters, digits, '-' or '_', got {label[:60]!r}")
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    remotes = connect(stage)
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
    backup_id = _check_id(str(manifest.get("id", "")))
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
        local.mkdir(mode=0o700)
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
    with os.fdopen(fd, "wb") as out:
        remote.conn.get(remote_path, out)


def list_backups(project: ProjectConfig, stage_name: str | None, as_json: bool = False) -> list[dict]:
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    remote = connect(stage)[stage.backup_host.name]
    found = server_tools.manifests(remote, layout)
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
    remote = connect(stage)[stage.backup_host.name]
    forced = [] if restore_test is None else ["--restore-test" if restore_test else "--no-restore-test"]
    report = server_tools.tool(remote, layout, *stage.backups.check_args(), "--json", *forced, exits=(0, 1, 2))
    if as_json:
        console.say(json.dumps(report, indent=2))
    else:
        console.say(reports.table(report))
    if report["status"]:
        failing = [f"{c['check']} {c['state']}" for c in report["checks"] if c["status"]]
        raise BackupCheckFailed(f"backup check {report['state']}: {', '.join(failing)}", report["status"],
                                hint=f"fab backups --stage {stage.name}; a fresh backup: fab backup --stage {stage.name}")
    return report


@dataclass
class Restore(StageRemotes):
    stage: StageConfig
    remotes: dict[str, Remote]
    layout: Layout
    backup_id: str
    release: str = ""
    manifest: dict = field(default_factory=dict)
    safety: dict | None = None
    result: dict | None = None
    unless_written: list[int] | None = None  # the migration's xids: restore only if nothing else wrote
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)  # its pin on the backup, against retention

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """The backup kept from retention while this restore reads it (over several tool runs)."""
        try:
            yield
        finally:
            try:
                server_tools.tool(self.backup_remote, self.layout, "unpin", self.backup_id, "--owner", self.owner)
            except DeployError as exc:  # the pin lapses after a while; retention only waits longer
                console.warn(f"could not unpin {self.backup_id}: {exc}")


class WrittenSince(DeployError):
    """A restore was refused: rows were (or may have been) written since the backup."""


def _check(r: Restore) -> None:
    r.release = _serving(r.apps[0], r.layout)  # the migrations host need not serve the app
    found = r.backup_remote.run(["cat", f"{r.layout.backups}/{r.backup_id}.json"], check=False)
    if found.exited != 0:
        raise DeployError(f"there is no backup {r.backup_id} on {r.stage.name}",
                          hint=f"fab backups --stage {r.stage.name}")
    r.manifest = json.loads(found.stdout)
    server_tools.tool(r.backup_remote, r.layout, "pin", r.backup_id, "--owner", r.owner)
    checked = server_tools.verify(r.backup_remote, r.layout, r.backup_id)
    if not checked["ok"]:
        raise DeployError(f"backup {r.backup_id} fails verification (sha256 ok: {checked['sha256_ok']}, "
                          f"full read ok: {checked.get('read_ok')}); refusing to restore it",
                          hint=f"pick another backup: fab backups --stage {r.stage.name}")
    console.say(f"  {r.backup_id}: verified (sha256 and a full read); revision {r.manifest.get('revision')}")


def _safety_backup(r: Restore) -> None:
    # no pruning here: it could remove the very backup being restored
    r.safety = take(r.stage, r.remotes, "before-restore", prune=False)
    console.say(f"  safety backup of the current database: {r.safety['id']}")


def _stop_app(r: Restore) -> None:
    on_hosts("stopping the app", r.apps, lambda m: service.systemctl(m, "stop", r.stage.service))


def _start_app(r: Restore) -> None:
    on_hosts("starting the app", r.apps, lambda m: service.systemctl(m, "start", r.stage.service))


def _restore(r: Restore) -> None:
    r.result = server_tools.restore(r.backup_remote, r.layout, r.stage, r.backup_id, r.unless_written)
    if r.result.get("written"):
        raise WrittenSince("; ".join(r.result["written"]))
    if not r.result["ok"]:
        raise DeployError(f"pg_restore failed: {r.result['error']}")
    if r.result["revision"] != r.manifest.get("revision") or r.result["row_counts"] != r.manifest.get("row_counts"):
        raise DeployError(f"the restored database does not match the manifest (revision {r.result['revision']} vs "
                          f"{r.manifest.get('revision')}, row counts {'equal' if r.result['row_counts'] == r.manifest.get('row_counts') else 'differ'})")
    console.say(f"  restored in {r.result['duration']}s: revision {r.result['revision']}, row counts as in the manifest")


def _put_safety_back(r: Restore) -> None:
    if r.result and r.result.get("written"):
        return  # refused before pg_restore started: nothing to put back (and a write to keep)
    back = server_tools.restore(r.backup_remote, r.layout, r.stage, r.safety["id"])
    if not back["ok"]:
        raise DeployError(f"the safety backup {r.safety['id']} could not be put back either: {back['error']}")


STEPS = [
    pipeline.Step("verify", _check),
    pipeline.Step("safety backup", _safety_backup),
    pipeline.Step("stop app", _stop_app, _start_app),
    pipeline.Step("restore", _restore, _put_safety_back),
    pipeline.Step("start app", _start_app),
]


def restore_in_place(stage: StageConfig, remotes: dict[str, Remote], backup_id: str,
                     unless_written: list[int] | None = None) -> dict:
    """The restore steps under a lock the caller holds (a deploy's undo); the result names the
    safety backup. With `unless_written`, refused (WrittenSince) unless nothing but the
    migration wrote since the backup, decided by the server tool just before pg_restore."""
    r = Restore(stage, remotes, Layout(stage.deploy_to), _check_id(backup_id), unless_written=unless_written)
    try:
        with r.pinned():
            pipeline.run(STEPS, r, lambda event, step: console.say(f"  restore: {step}") if event == "start" else None)
    except pipeline.DeployFailed as failed:
        if isinstance(failed.cause, WrittenSince) and not failed.outcome.undo_failures:
            raise failed.cause from None
        raise
    return {**(r.result or {}), "safety": r.safety["id"] if r.safety else None}


def restore(project: ProjectConfig, stage_name: str | None, backup_id: str) -> dict:
    """Restore BACKUP_ID into the stage's database (see the module docstring)."""
    stage = load_stage(project, stage_name)
    r = Restore(stage, connect(stage), Layout(stage.deploy_to), _check_id(backup_id))
    console.heading(f"restore {backup_id} on {stage.name}")
    with guard.guarded(r.migrator, r.layout, lock.holder("restore", backup_id), stage.name), r.pinned():
        pipeline.run(STEPS, r, lambda event, step: console.say(f"-> {step}") if event == "start" else None)
        deploylog.append(r.migrator, r.layout, {
            "time": deploylog.now(), "action": "restore", "user": getpass.getuser(), "stage": stage.name,
            "backup": backup_id, "revision_after": r.result["revision"], "safety_backup": r.safety["id"],
            "outcome": "ok"})
    _report_health(r)
    return r.result or {}


def _report_health(r: Restore) -> None:
    """The app runs again; say whether its code expects the restored revision, and what to run if not."""
    restored = r.result["revision"]
    answers = on_hosts("health", r.apps, lambda m: service.health(m, r.stage.health_url))
    expected = {body.get("expected_revision") for _, body in answers.values() if isinstance(body, dict)}
    if expected <= {restored}:
        on_hosts("health", r.apps, lambda m: service.wait_healthy(
            m, r.stage.health_url, r.release, restored, r.stage.health_timeout, service=r.stage.service))
        console.ok(f"restored {r.backup_id}; the app is healthy at {restored}")
        return
    matching = [rel["id"] for rel in build.list_releases(r.migrator, r.layout)
                if rel.get("revision") == restored and rel.get("status") == "good"]
    console.banner([f"restored {r.backup_id} (revision {restored}), but the serving release {r.release} expects "
                    f"{', '.join(sorted(e for e in expected if e))}",
                    (f"releases made for {restored}: {', '.join(matching)}; run: fab rollback --stage "
                     f"{r.stage.name} --to {matching[-1]}") if matching else
                    f"no release on the stage expects {restored}: deploy a commit whose head is {restored}"])
