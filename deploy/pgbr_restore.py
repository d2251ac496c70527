"""`fab restore` for a stage whose backups.engine is "pgbackrest": a backup as it was when it
ended, a point in time (`--time`), or the restore point a deploy made before migrating
(`--release`). The whole cluster of the database host is restored in place.

Like the pgdump restore: the stage is locked, the app stopped, a safety point made first (so
the database as it was stays reachable: `fab restore --point NAME`), the safety point put back
if the restore fails, the app started again; journaled, so `fab recover` undoes it from any
controller. A target that no backup precedes is refused before anything changes.
"""
from __future__ import annotations

import getpass
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import console, pgbr, pipeline
from . import restore as dump_restore
from .config import ProjectConfig
from .errors import DeployError
from .pgbr_setup import HelperFailed
from .ssh import dbops, deploylog, guard, lock
from .ssh.connection import Remote, StageRemotes, connect
from .ssh.layout import Layout
from .stages import StageConfig, load_stage


def parse_time(text: str) -> datetime:
    """An ISO time (`2026-11-25 14:03:00`, with an offset or Z; UTC without one)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DeployError(f"--time {text[:40]!r} is not a time like 2026-11-25 14:03:00 (UTC unless an offset "
                          "is given, e.g. +01:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Target:
    """What to restore to, in pgBackRest's terms."""

    kind: str                       # immediate (a backup's end), time, name (a restore point)
    describe: str
    backup: str                     # the backup set restored from
    target: str | None = None
    timeline: str | None = None   # a number, or "current": the timeline of the backup restored

    @classmethod
    def point(cls, point: dict, describe: str) -> "Target":
        """To a restore point, from the backup the repository host chose for it (pgbr.base_for)."""
        return cls("name", describe, point["base_backup"], point["name"], point["target_timeline"])

    def helper_args(self) -> list[str]:
        args = ["--type", self.kind, "--set", self.backup]
        args += ["--target", self.target] if self.target else []
        args += ["--target-timeline", str(self.timeline)] if self.timeline else []
        return args

    def to_record(self) -> dict:
        return {"kind": self.kind, "describe": self.describe, "backup": self.backup, "target": self.target,
                "timeline": self.timeline}


def choose(found: dict, backup_id: str | None, at: str | None, release: str | None,
           point: str | None) -> Target | dict:
    """The target the operator named (a backup or a time: with the newest backup before it; refused
    when none precedes it), or the recorded restore point it names."""
    backups = [b for b in found["backups"] if not b["error"]]
    if sum(x is not None for x in (backup_id, at, release, point)) != 1:
        raise DeployError("name one target: fab restore ID, or fab restore.to --time T, --release R or --point NAME",
                          hint="fab backups lists the backups and the restore points")
    if backup_id is not None and any(b["id"] == backup_id for b in backups):
        return Target("immediate", f"backup {backup_id}", backup_id)  # stops where the backup ends: no timeline to follow
    if backup_id is not None:  # a restore point's name is an id of `fab backups` too
        if not any(p["name"] == backup_id for p in found["points"]):
            raise DeployError(f"there is no backup or restore point {backup_id[:60]!r} in the repository",
                              hint="fab backups")
        point = backup_id
    if at is not None:
        moment = parse_time(at)
        if moment.timestamp() > time.time():
            raise DeployError(f"--time {at} is in the future")
        before = [b for b in backups if b["stop_epoch"] <= moment.timestamp()]
        if not before:
            raise DeployError(f"no backup ended before {moment.isoformat()}: the oldest ended at "
                              f"{backups[0]['time'] if backups else '(there is none)'}; a point in time can only "
                              "be reached from a backup taken before it", hint="fab backups")
        stamp = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        return Target("time", f"the time {moment.isoformat()}", before[-1]["id"], stamp)
    points = [p for p in found["points"] if (p.get("release") == release if release else p["name"] == point)]
    if not points:
        what = f"release {release}" if release else f"point {point}"
        raise DeployError(f"no restore point of the {what} is recorded (a deploy makes one only when it migrates)",
                          hint="fab backups lists the restore points")
    return points[-1]


def choose_target(stage: StageConfig, remotes: dict[str, Remote], backup_id: str | None, at: str | None,
                  release: str | None, point: str | None) -> Target:
    """The Target, a point's base backup chosen on the repository host along its timeline's history."""
    chosen = choose(pgbr.repo_tool(stage, remotes, "list"), backup_id, at, release, point)
    if isinstance(chosen, Target):
        return chosen
    base = pgbr.repo_tool(stage, remotes, "base", "--lsn", chosen["lsn"], "--timeline", str(chosen["timeline"]))
    return Target.point({**chosen, "base_backup": base["backup"], "target_timeline": base["target_timeline"]},
                        f"the restore point {chosen['name']}")


@dataclass
class PointRestore(StageRemotes):
    stage: StageConfig
    remotes: dict[str, Remote]
    layout: Layout
    target: Target
    release: str = ""
    safety: dict | None = None
    safety_name: str = field(default_factory=lambda: f"before-restore-{deploylog.stamp()}")
    result: dict | None = None
    holder: dict = field(default_factory=dict)
    reached: str = ""
    unless_written: dict | None = None  # {"since": LSN, "xids": [...]}: a deploy's undo, only if unwritten
    refused: bool = False               # the restore stopped before it touched the cluster

    @property
    def backup_id(self) -> str:
        return self.target.describe

    def to_record(self) -> dict:
        return {"subject": f"restore to {self.target.describe}", "engine": "pgbackrest",
                "target": self.target.to_record(), "release": self.release, "safety": self.safety,
                "safety_name": self.safety_name}

    @classmethod
    def from_record(cls, stage: StageConfig, remotes: dict[str, Remote], record: dict) -> "PointRestore":
        return cls(stage, remotes, Layout(stage.deploy_to), Target(**record["target"]),
                   release=record.get("release") or "", safety=record.get("safety"),
                   safety_name=record.get("safety_name") or "", **guard.progress(record))


class WrittenSince(DeployError):
    """Refused: something else than the migration wrote since the restore point."""


def _safety_point(r: PointRestore) -> None:
    r.safety = pgbr.safety_point(r.stage, r.remotes, r.safety_name, "before-restore")
    console.say(f"  safety point {r.safety_name} at {r.safety['lsn']} (timeline {r.safety['timeline']}): the "
                f"database as it is now")


def _restore(r: PointRestore) -> None:
    r.refused = True  # until the helper has stopped the cluster, nothing is to be put back
    if r.unless_written is not None:
        reasons = unwritten(r.stage, r.remotes, r.unless_written)
        if reasons:
            raise WrittenSince("; ".join(reasons))
    try:
        r.result = pgbr.helper(r.stage, r.remotes, "restore", *r.target.helper_args())
    except HelperFailed as exc:
        r.refused = not exc.touched
        raise
    except DeployError:  # the connection lost: the helper may have begun
        r.refused = False
        raise
    r.refused = False
    r.result["revision"] = _revision(r)
    console.say(f"  restored to {r.target.describe} from {r.target.backup} in {r.result['seconds']}s "
                f"(timeline {r.result['timeline']}); revision {r.result['revision']}")


def _put_safety_back(r: PointRestore) -> None:
    """Back to the safety point (where the database was: the app stopped before it was made), once the
    cluster was touched or may have been (a lost connection; fab recover, which cannot know)."""
    if r.refused:
        return
    back = Target.point(r.safety, f"the safety point {r.safety_name}")
    pgbr.helper(r.stage, r.remotes, "restore", *back.helper_args())
    console.say(f"  put the database back to the safety point {r.safety_name}")


def _revision(r: PointRestore) -> str | None:
    return dbops.current_revision(r.migrator, r.layout)


STEPS = [  # the app stops before the safety point: nothing it writes can fall after it
    pipeline.Step("verify", lambda r: None),
    pipeline.Step("stop app", dump_restore.stop_app, dump_restore.start_app),
    pipeline.Step("safety point", _safety_point),
    pipeline.Step("restore", _restore, _put_safety_back),
    pipeline.Step("start app", dump_restore.start_app, dump_restore.stop_app),
]


def restore(project: ProjectConfig, stage_name: str | None, backup_id: str | None = None, at: str | None = None,
            release: str | None = None, point: str | None = None) -> dict:
    """Restore the stage's cluster to a backup, a time, a release's restore point or a named point."""
    stage = load_stage(project, stage_name)
    with connect(stage) as remotes:
        target = choose_target(stage, remotes, backup_id, at, release, point)
        r = PointRestore(stage, remotes, Layout(stage.deploy_to), target)
        r.release = dump_restore.serving_release(r.apps[0], r.layout)
        console.heading(f"restore {stage.name} to {target.describe} (from the backup {target.backup})")
        with guard.guarded(r.migrator, r.layout, lock.holder("restore", target.describe), stage.name) as r.holder:
            guard.run_journaled(r, "restore", STEPS, lambda outcome, error: _log(r, outcome, error))
        dump_restore.report_health(r)
    return r.result or {}


def unwritten(stage: StageConfig, remotes: dict[str, Remote], evidence: dict) -> list[str]:
    """Why the WAL since the point does not prove that only the migration wrote; [] when it does."""
    try:
        return pgbr.helper(stage, remotes, "unwritten", "--since", evidence["since"],
                           "--xids", ",".join(map(str, evidence["xids"])))["reasons"]
    except HelperFailed as exc:  # e.g. the WAL since the point already recycled: nothing is proven
        return [f"the WAL since the restore point could not be read ({exc})"]


def restore_point_if_unwritten(stage: StageConfig, remotes: dict[str, Remote], point: dict,
                               migration_xids: list[int]) -> tuple[dict, list[str]]:
    """A deploy's last resort after a failed downgrade: with the app stopped, back to the deploy's
    restore point only if the WAL since it shows no write but the migration's. (result, []) when
    restored; ({}, reasons) when not, nothing changed. The app runs again after."""
    evidence = {"since": point["lsn"], "xids": migration_xids}
    target = Target.point(point, f"the restore point {point['name']}")
    r = PointRestore(stage, remotes, Layout(stage.deploy_to), target, unless_written=evidence)
    with dump_restore.app_stopped_meanwhile(r, "the restore point"):
        try:
            reasons = unwritten(stage, remotes, evidence)
            if reasons:
                return {}, reasons
            pipeline.run(STEPS[2:4], r,
                         lambda event, step: console.say(f"  restore: {step}") if event == "start" else None)
            return {**(r.result or {}), "safety": r.safety_name}, []
        except pipeline.DeployFailed as failed:
            if isinstance(failed.cause, WrittenSince) and not failed.outcome.undo_failures:
                return {}, [str(failed.cause)]
            raise


def _log(r: PointRestore, outcome: str, error: str | None = None) -> None:
    deploylog.append_or_warn(r.migrator, r.layout, {
        "time": deploylog.now(), "action": "restore", "user": getpass.getuser(), "stage": r.stage.name,
        "backup": r.target.backup, "target": r.target.describe, "revision_after": (r.result or {}).get("revision"),
        "safety_point": r.safety_name if r.safety else None, "outcome": outcome, "error": error})


def recover(stage: StageConfig, remotes: dict[str, Remote], record: dict) -> list[str]:
    """Undo a restore whose controller died: back to the safety point if the restore had started,
    the app started."""
    r = PointRestore.from_record(stage, remotes, record)
    if r.reached == "start app":
        dump_restore.start_app(r)
        notes = [f"the restore to {r.target.describe} had finished: the app is started again; the database as "
                 f"it was before it is at the safety point {r.safety_name}"]
    else:
        pipeline.undo_from(STEPS, r, r.reached, stage.name)
        notes = ([f"the database is back at the safety point {r.safety_name}"] if r.safety and r.reached == "restore"
                 else ["the restore had not started: the database was not changed"])
    _log(r, "recovered", f"the controller stopped during '{record.get('step')}'")
    return notes

