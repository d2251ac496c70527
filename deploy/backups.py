"""`fab backup`, `fab backups`, `fab restore`: logical backups of the stage's database,
taken on the migrations host with the serving release's environment, and a
restore that refuses an unverified backup, takes a safety backup first, stops
the app while it runs and puts the safety backup back if the restore fails."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import console, pipeline
from .config import ProjectConfig
from .errors import DeployError
from .remote import build, dbops, deploylog, lock, service
from .remote.connection import Remote, StageRemotes, connect, on_hosts
from .remote.layout import Layout
from .stages import StageConfig, load_stage

BACKUP_ID = re.compile(r"\d{14}-[A-Za-z0-9_.-]{1,60}")
LABEL = re.compile(r"[A-Za-z0-9_-]{1,40}")

LIST = """import glob, json, os, sys
out = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    if path.endswith(".verify.json"):
        continue
    try:
        manifest = json.load(open(path))
        check = path[:-5] + ".verify.json"
        manifest["verified"] = json.load(open(check)) if os.path.exists(check) else None
        out.append(manifest)
    except (OSError, ValueError):
        pass
print(json.dumps(out))
"""


def _serving(remote: Remote, layout: Layout) -> str:
    release = service.current_release(remote, layout)
    if not release:
        raise DeployError(f"{remote.name} has no current release: backups run with the app's environment",
                          hint="fab deploy first")
    return release


def _check_id(backup_id: str) -> str:
    if not BACKUP_ID.fullmatch(backup_id) or ".." in backup_id:
        raise DeployError(f"{backup_id[:80]!r} is not a backup id", hint="fab backups --stage STAGE lists them")
    return backup_id


def backup(project: ProjectConfig, stage_name: str | None, label: str | None = None,
           download: str | None = None) -> dict:
    """A pg_dump of the stage's database on the migrations host, with its manifest; optionally copied here."""
    if label is not None and not LABEL.fullmatch(label):
        raise DeployError(f"--label must be 1-40 letters, digits, '-' or '_', got {label[:60]!r}")
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    remote = connect(stage)[stage.migrations_host.name]
    backup_id = deploylog.stamp() + "-" + (label or "manual")
    manifest = dbops.backup(remote, layout, _serving(remote, layout), backup_id, label or "manual")
    console.ok(f"backup {backup_id}: {manifest['size']} bytes in {manifest['duration']}s, revision "
               f"{manifest['revision']}, sha256 {manifest['sha256'][:12]}")
    if download:
        fetch(remote, layout, manifest, Path(download))
    return manifest


def fetch(remote: Remote, layout: Layout, manifest: dict, folder: Path) -> Path:
    """Copy a backup and its manifest here; the sha256 is checked after the transfer."""
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / f"{manifest['id']}.dump"
    for suffix in (".dump", ".json"):
        target = folder / f"{manifest['id']}{suffix}"
        remote.conn.get(f"{layout.backups}/{manifest['id']}{suffix}", str(target))
        os.chmod(target, 0o600)
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    if digest != manifest["sha256"]:
        raise DeployError(f"the downloaded {local.name} does not match its sha256 ({digest[:12]} != "
                          f"{manifest['sha256'][:12]})", hint="download it again")
    console.ok(f"downloaded to {local} (sha256 checked)")
    return local


def list_backups(project: ProjectConfig, stage_name: str | None, as_json: bool = False) -> list[dict]:
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    remote = connect(stage)[stage.migrations_host.name]
    found = json.loads(remote.run(["python3", "-c", LIST, layout.backups]).stdout)
    if as_json:
        console.say(json.dumps(found, indent=2))
        return found
    for m in found:
        checked = m.get("verified")
        verdict = "never verified" if not checked else ("ok" if checked.get("ok") else "FAILED") + " " + checked.get("time", "")
        console.say(f"{m['id']:<40} {m['time']:<21} {m['size']:>10} B  rev {m.get('revision')}  "
                    f"release {m.get('release')}  {verdict}")
    return found


def verify(remote: Remote, layout: Layout, release: str, backup_id: str) -> dict:
    """sha256 and a full read; the result is kept beside the backup."""
    result = dbops.server_tool(remote, layout, release, "backup_tool", "verify", layout.backups, backup_id)
    result["time"] = deploylog.now()
    remote.run(["sh", "-c", 'umask 077 && cat > "$1"', "verify", f"{layout.backups}/{backup_id}.verify.json"],
               input=json.dumps(result))
    return result


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


def _check(r: Restore) -> None:
    r.release = _serving(r.migrator, r.layout)
    found = r.migrator.run(["cat", f"{r.layout.backups}/{r.backup_id}.json"], check=False)
    if found.exited != 0:
        raise DeployError(f"there is no backup {r.backup_id} on {r.stage.name}",
                          hint=f"fab backups --stage {r.stage.name}")
    r.manifest = json.loads(found.stdout)
    checked = verify(r.migrator, r.layout, r.release, r.backup_id)
    if not checked["ok"]:
        raise DeployError(f"backup {r.backup_id} fails verification (sha256 ok: {checked['sha256_ok']}, "
                          f"full read ok: {checked.get('read_ok')}); refusing to restore it",
                          hint=f"pick another backup: fab backups --stage {r.stage.name}")
    console.say(f"  {r.backup_id}: verified (sha256 and a full read); revision {r.manifest.get('revision')}")


def _safety_backup(r: Restore) -> None:
    safety_id = deploylog.stamp() + "-before-restore"
    r.safety = dbops.backup(r.migrator, r.layout, r.release, safety_id, "before-restore")
    console.say(f"  safety backup of the current database: {safety_id}")


def _stop_app(r: Restore) -> None:
    on_hosts("stopping the app", r.apps, lambda m: service.systemctl(m, "stop", r.stage.service))


def _start_app(r: Restore) -> None:
    on_hosts("starting the app", r.apps, lambda m: service.systemctl(m, "start", r.stage.service))


def _restore(r: Restore) -> None:
    r.result = dbops.server_tool(r.migrator, r.layout, r.release, "backup_tool", "restore", r.layout.backups,
                                 r.backup_id, "2")
    if not r.result["ok"]:
        raise DeployError(f"pg_restore failed: {r.result['error']}")
    if r.result["revision"] != r.manifest.get("revision") or r.result["row_counts"] != r.manifest.get("row_counts"):
        raise DeployError(f"the restored database does not match the manifest (revision {r.result['revision']} vs "
                          f"{r.manifest.get('revision')}, row counts {'equal' if r.result['row_counts'] == r.manifest.get('row_counts') else 'differ'})")
    console.say(f"  restored in {r.result['duration']}s: revision {r.result['revision']}, row counts as in the manifest")


def _put_safety_back(r: Restore) -> None:
    back = dbops.server_tool(r.migrator, r.layout, r.release, "backup_tool", "restore", r.layout.backups,
                             r.safety["id"], "2")
    if not back["ok"]:
        raise DeployError(f"the safety backup {r.safety['id']} could not be put back either: {back['error']}")


STEPS = [
    pipeline.Step("verify", _check),
    pipeline.Step("safety backup", _safety_backup),
    pipeline.Step("stop app", _stop_app, _start_app),
    pipeline.Step("restore", _restore, _put_safety_back),
    pipeline.Step("start app", _start_app),
]


def restore_in_place(stage: StageConfig, remotes: dict[str, Remote], backup_id: str) -> dict:
    """The restore steps under a lock the caller holds (a deploy's undo)."""
    r = Restore(stage, remotes, Layout(stage.deploy_to), _check_id(backup_id))
    pipeline.run(STEPS, r)
    return r.result or {}


def restore(project: ProjectConfig, stage_name: str | None, backup_id: str) -> dict:
    """Restore BACKUP_ID into the stage's database (see the module docstring)."""
    stage = load_stage(project, stage_name)
    r = Restore(stage, connect(stage), Layout(stage.deploy_to), _check_id(backup_id))
    console.heading(f"restore {backup_id} on {stage.name}")
    lock.acquire(r.migrator, r.layout, lock.holder("restore", backup_id), stage.name)
    try:
        pipeline.run(STEPS, r, lambda event, step: console.say(f"-> {step}") if event == "start" else None)
    finally:
        lock.release(r.migrator, r.layout)
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
