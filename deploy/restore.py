"""`fab restore`: a backup back into the stage's database. It refuses an unverified
backup, pins it against retention, takes a safety backup first, stops the app while it
runs, puts the safety backup back if the restore fails, and starts the app again.

Like a deploy, it is journaled step by step on the migrations host: if its controller is
killed, `fab recover` undoes it (puts the safety backup back, starts the app) and names
the safety backup.
"""
from __future__ import annotations

import getpass
import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from . import console, pipeline
from .backups import check_id, take
from .config import ProjectConfig
from .errors import DeployError
from .ssh import build, deploylog, guard, lock, server_tools, service
from .ssh.connection import Remote, StageRemotes, connect, on_hosts
from .ssh.layout import Layout
from .stages import StageConfig, load_stage


def serving_release(remote: Remote, layout: Layout) -> str:
    release = service.current_release(remote, layout)
    if not release:
        raise DeployError(f"{remote.name} has no current release: a restore brings the app back and checks it",
                          hint="fab deploy first")
    return release


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
    safety_id: str = field(default_factory=lambda: f"{deploylog.stamp()}-before-restore")  # named before it exists
    holder: dict = field(default_factory=dict)
    reached: str = ""

    def to_record(self) -> dict:
        """What the journal keeps of this restore: what `fab recover` needs to undo it (from_record)."""
        return {"subject": f"restore of {self.backup_id}", "backup_id": self.backup_id, "release": self.release,
                "owner": self.owner, "safety_id": self.safety_id}

    @classmethod
    def from_record(cls, stage: StageConfig, remotes: dict[str, Remote], record: dict) -> "Restore":
        fields = {key: record[key] for key in ("owner", "safety_id") if record.get(key)}
        return cls(stage, remotes, Layout(stage.deploy_to), check_id(record.get("backup_id", "")),
                   release=record.get("release") or "", **fields, **guard.progress(record))

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
    r.release = serving_release(r.apps[0], r.layout)  # the migrations host need not serve the app
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
    r.safety = take(r.stage, r.remotes, "before-restore", backup_id=r.safety_id, prune=False)
    console.say(f"  safety backup of the current database: {r.safety_id}")


def stop_app(r: StageRemotes) -> None:
    on_hosts("stopping the app", r.apps, lambda m: service.systemctl(m, "stop", r.stage.service))


def start_app(r: StageRemotes) -> None:
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
    if r.result is not None and not r.result.get("touched", True):
        return  # refused or failed before anything changed: nothing to put back (and maybe a write to keep)
    back = server_tools.restore(r.backup_remote, r.layout, r.stage, r.safety_id)
    if not back["ok"]:
        raise DeployError(f"the safety backup {r.safety_id} could not be put back either: {back['error']}")
    console.say(f"  put the safety backup {r.safety_id} back")


STEPS = [  # the app stops before the safety backup: nothing it writes can fall between the two
    pipeline.Step("verify", _check),
    pipeline.Step("stop app", stop_app, start_app),
    pipeline.Step("safety backup", _safety_backup),
    pipeline.Step("restore", _restore, _put_safety_back),
    pipeline.Step("start app", start_app, stop_app),  # if a host cannot start, none serves the put-back
]


def restore_in_place(stage: StageConfig, remotes: dict[str, Remote], backup_id: str,
                     unless_written: list[int] | None = None) -> dict:
    """The restore steps under a lock the caller holds (a deploy's undo); the result names the
    safety backup. With `unless_written`, refused (WrittenSince) unless nothing but the
    migration wrote since the backup, decided by the server tool just before pg_restore."""
    r = Restore(stage, remotes, Layout(stage.deploy_to), check_id(backup_id), unless_written=unless_written)
    try:
        with r.pinned():
            pipeline.run(STEPS, r, lambda event, step: console.say(f"  restore: {step}") if event == "start" else None)
    except pipeline.DeployFailed as failed:
        if isinstance(failed.cause, WrittenSince) and not failed.outcome.undo_failures:
            raise failed.cause from None
        raise
    return {**(r.result or {}), "safety": r.safety_id if r.safety else None}


def restore_if_unwritten(stage: StageConfig, remotes: dict[str, Remote], backup_id: str,
                         migration_xids: list[int]) -> tuple[dict, list[str]]:
    """A deploy's last resort after a failed downgrade: with every writer of the app stopped,
    restore `backup_id` only if it is proven that nothing but the migration wrote since
    (server/unwritten.py, asked first and again just before pg_restore). (result, []) when
    restored; ({}, the reasons) when not, with nothing changed. The app runs again after."""
    r = Restore(stage, remotes, Layout(stage.deploy_to), check_id(backup_id))
    with app_stopped_meanwhile(r, "the pre-deploy backup"):
        try:
            reasons = server_tools.unwritten(r.backup_remote, r.layout, backup_id, migration_xids)
            if reasons:
                return {}, reasons
            return restore_in_place(stage, remotes, backup_id, unless_written=migration_xids), []
        except WrittenSince as exc:
            return {}, [str(exc)]


@contextmanager
def app_stopped_meanwhile(r: StageRemotes, weighed: str) -> Iterator[None]:
    """A failed deploy's fallback: the app's hosts that serve are stopped (no writer while the restore
    is weighed and made) and started again after, whatever happens."""
    running = [m for m in r.apps if service.systemctl(m, "is-active", r.stage.service, check=False).stdout.strip()
               == "active"]
    console.say(f"  the downgrade failed: the app stopped while {weighed} is weighed")
    on_hosts("stopping the app", running, lambda m: service.systemctl(m, "stop", r.stage.service))
    try:
        yield
    finally:
        on_hosts("starting the app", running, lambda m: service.systemctl(m, "start", r.stage.service))


def restore_any(project: ProjectConfig, stage_name: str | None, backup_id: str | None, at: str | None = None,
                release: str | None = None, point: str | None = None) -> dict:
    """`fab restore`: by the stage's engine, a pg_dump backup, or a pgBackRest target."""
    stage = load_stage(project, stage_name)
    if stage.backups.engine == "pgbackrest":
        from . import pgbr_restore
        return pgbr_restore.restore(project, stage.name, backup_id, at, release, point)
    if at or release or point:
        raise DeployError("fab restore.to (a time, a release's restore point) needs the pgbackrest engine; this "
                          "stage's backups are pg_dumps", hint=f"fab backups --stage {stage.name}; "
                                                              f"fab restore --stage {stage.name} ID")
    if not backup_id:
        raise DeployError("name the backup to restore", hint=f"fab backups --stage {stage.name} lists them")
    return restore(project, stage.name, backup_id)


def restore(project: ProjectConfig, stage_name: str | None, backup_id: str) -> dict:
    """Restore BACKUP_ID into the stage's database (see the module docstring)."""
    stage = load_stage(project, stage_name)
    with connect(stage) as remotes:
        r = Restore(stage, remotes, Layout(stage.deploy_to), check_id(backup_id))
        console.heading(f"restore {backup_id} on {stage.name}")
        with guard.guarded(r.migrator, r.layout, lock.holder("restore", backup_id), stage.name) as r.holder, r.pinned():
            guard.run_journaled(r, "restore", STEPS, lambda outcome, error: _log(r, outcome, error))
        report_health(r)
    return r.result or {}


def _log(r: Restore, outcome: str, error: str | None = None) -> None:
    """deploy.log: every restore, with the safety backup that holds the database as it was."""
    deploylog.append_or_warn(r.migrator, r.layout, {
        "time": deploylog.now(), "action": "restore", "user": getpass.getuser(), "stage": r.stage.name,
        "backup": r.backup_id, "revision_after": (r.result or {}).get("revision"),
        "safety_backup": r.safety_id if r.safety else None, "outcome": outcome, "error": error})


def recover(stage: StageConfig, remotes: dict[str, Remote], record: dict) -> list[str]:
    """Undo a restore whose controller died: the safety backup put back if the restore had
    started, the app started; the safety backup named either way."""
    r = Restore.from_record(stage, remotes, record)
    names = [s.name for s in STEPS]
    if r.reached in names and names.index(r.reached) > names.index("safety backup"):
        r.safety = {"id": r.safety_id}
    if r.reached == "start app":  # the restore itself was done: finish it rather than undo it
        start_app(r)
        notes = [f"the restore of {r.backup_id} had finished: the app is started again; the database as it "
                 f"was before it is in the safety backup {r.safety_id}"]
    else:
        pipeline.undo_from(STEPS, r, r.reached, stage.name)
        notes = ([f"the safety backup {r.safety_id} holds the database as it was before the restore"] if r.safety
                 else ["the restore had not started: the database was not changed"])
    _log(r, "recovered", f"the controller stopped during '{record.get('step')}'")
    try:
        server_tools.tool(r.backup_remote, r.layout, "unpin", r.backup_id, "--owner", r.owner)
    except DeployError as exc:
        console.warn(f"could not unpin {r.backup_id} (the pin lapses by itself): {exc}")
    return notes


def report_health(r: Restore) -> None:
    """The app runs again; say whether its code expects the restored revision, and what to run if not."""
    restored = r.result["revision"]
    # The app was just started: first its release must answer (at whatever revision it expects).
    answers = on_hosts("health", r.apps, lambda m: service.wait_healthy(
        m, r.stage.health_url, r.release, None, r.stage.health_timeout, any_revision=True, service=r.stage.service))
    expected = {body.get("expected_revision") for body in answers.values() if isinstance(body, dict)}
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
