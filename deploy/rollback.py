"""`fab rollback`: code and database back to what an earlier release expects, under
the deploy lock, with the same engine (each step with its undo) and health check.

Order: back up, switch the code (it is checked only for answering, since the
schema may not match yet), move the database with the code that knows both
revisions (the newer release's), then check health at the target revision.

Going back, the database follows the phases (deploy_runtime.phases): a post revision is
never downgraded automatically, and a schema the target's code is checked to work on is
kept (undo_expand = "keep"), since a downgrade would drop what the newer code wrote.
"""
from __future__ import annotations

import getpass
import json
import re
import time
from dataclasses import dataclass, field

from . import backups, compat, console, events, notify, pipeline, rolling
from .config import ProjectConfig
from .errors import DeployError
from .migrations import MIGRATION_LOCK_KEY
from .ssh import build, dbops, deploy_metrics, deploylog, guard, lock, server_tools, service
from .ssh.connection import Remote, connect, on_hosts
from .ssh.layout import Layout
from .stages import StageConfig, load_stage

RELEASE_ID = re.compile(r"\d{14}-[0-9a-f]{8}")


@dataclass
class Rollback(rolling.Switching):
    stage: StageConfig
    remotes: dict[str, Remote]
    layout: Layout
    requested: str | None = None  # --to, else the previous good release
    source: str = ""           # the release serving now
    target: str = ""
    app: str = ""              # what `flask --app` loads: deploy.toml's [project] app
    live_path: str = "/livez"  # deploy.toml's [project] live_path
    db_now: str | None = None
    target_revision: str | None = None
    backup: dict | None = None
    moved: bool = False
    database: str = "downgrade"  # or "keep": the target's code was checked to work on the schema as it is
    mover: str = ""            # the release whose code moves the database
    notes: list[str] = field(default_factory=list)
    holder: dict = field(default_factory=dict)
    reached: str = ""
    batch: int = 0             # the stage's batch size: hosts switched at once (0 = all)
    switched: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # for the deploy metrics' duration

    def to_record(self) -> dict:
        """What the journal keeps of this rollback: what `fab recover` needs to undo it (from_record)."""
        return {"subject": f"rollback {self.source or '?'} -> {self.target or '?'}", "requested": self.requested,
                "source": self.source, "target": self.target, "app": self.app, "db_now": self.db_now,
                "target_revision": self.target_revision, "backup": self.backup, "moved": self.moved,
                "mover": self.mover, "database": self.database}

    @classmethod
    def from_record(cls, stage: StageConfig, remotes: dict[str, Remote], record: dict) -> "Rollback":
        return cls(stage, remotes, Layout(stage.deploy_to), requested=record.get("requested"),
                   source=record.get("source") or "", target=record.get("target") or "", app=record.get("app") or "",
                   db_now=record.get("db_now"), target_revision=record.get("target_revision"),
                   backup=record.get("backup"), moved=bool(record.get("moved")), mover=record.get("mover") or "",
                   database=record.get("database") or "downgrade",
                   **guard.progress(record))


def choose(r: Rollback) -> None:
    to = r.requested
    releases = build.list_releases(r.migrator, r.layout)
    r.source = service.current_release(r.apps[0], r.layout) or ""  # the migrations host need not serve the app
    if to is not None and not RELEASE_ID.fullmatch(to):
        raise DeployError(f"{to[:80]!r} is not a release id", hint=f"fab releases --stage {r.stage.name}")
    known = {rel["id"]: rel for rel in releases}
    if to is None:
        earlier = [rel["id"] for rel in releases if rel.get("status") == "good" and rel["id"] < r.source]
        if not earlier:
            raise DeployError("there is no earlier good release to roll back to",
                              hint=f"fab releases --stage {r.stage.name}")
        to = earlier[-1]
    if to not in known:
        raise DeployError(f"{to} is not a release on {r.stage.name}", hint=f"fab releases --stage {r.stage.name}")
    if known[to].get("status") == "failed":
        raise DeployError(f"{to} is a failed release", hint="roll back to a good one (fab releases)")
    if to == r.source:
        raise DeployError(f"{to} is already current")
    hosts = r.apps + ([] if r.migrator in r.apps else [r.migrator])  # the migrator runs the target's code too
    missing = [m.name for m in hosts if m.run(["test", "-d", r.layout.release(to)], check=False).exited != 0]
    if missing:
        raise DeployError(f"{to} is not on {', '.join(missing)} (removed by cleanup?)", hint="deploy its commit instead")
    r.target, r.target_revision = to, known[to].get("revision")
    r.db_now = dbops.current_revision(r.migrator, r.layout)
    console.say(f"  {r.source} -> {r.target}; database at {r.db_now}, {r.target}'s head is {r.target_revision}")
    if r.db_now != r.target_revision:
        r.mover = _mover(r)
        if r.mover == r.source:
            plan_downgrade(r)
    if r.database == "keep":
        r.target_revision = r.db_now


def plan_downgrade(r: Rollback) -> None:
    """Which way the database goes back, said before anything changes: never below a post
    revision (a contract: what it dropped is not brought back by a downgrade); kept where the
    target's code was checked to work on it (undo_expand = "keep"), since a downgrade would
    drop what newer code wrote; else downgraded."""
    revisions = _revisions_between(r)
    if revisions is None:
        console.say(f"  database: downgrade to {r.target_revision} ({r.source} predates phases: not checked)")
        return
    contracts = [rev["id"] for rev in revisions if rev["phase"] == "post"]
    if contracts:
        raise DeployError(f"going back to {r.target} would downgrade the post revision(s) {', '.join(contracts)}: a "
                          "contract, never downgraded automatically (what it dropped would come back empty)",
                          hint=f"restore a backup from before it (fab backups --stage {r.stage.name}), or roll back to "
                               "a release at or after it")
    problems = []
    if r.stage.undo_expand == "keep":
        report = compat.schema_report(r.migrator, r.layout, r.target, r.app, r.source)
        problems = [f"{p['table']}.{p['column'] or ''}: {p['problem']}" for p in report["problems"]]
        if not problems:
            r.database = "keep"
            console.say(f"  database: kept at {r.db_now}: {r.target}'s code was checked to work on it, and a downgrade "
                        f"would drop what newer code wrote ({', '.join(rev['id'] for rev in revisions)} stay)")
            return
    why = f"{r.target}'s code would break on it: " + "; ".join(problems) if problems else 'undo_expand = "downgrade"'
    console.say(f"  database: downgrade {r.db_now} -> {r.target_revision} ({why})")


def _revisions_between(r: Rollback) -> list[dict] | None:
    """The revisions a downgrade would undo, with their phases, from the serving release's own
    code; None when its runtime predates phases."""
    out = dbops.in_release(r.migrator, r.layout, r.source,
                           [".venv/bin/python", "-m", "deploy_runtime.phases", r.app, r.target_revision or "base",
                            r.db_now], check=False, timeout=120)
    if out.exited != 0:
        if "No module named deploy_runtime.phases" in out.stderr:
            return None
        raise DeployError(f"could not read the phases of {r.source}'s revisions: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout)


def back_up(r: Rollback) -> None:
    if r.db_now != r.target_revision:
        r.backup = backups.take(r.stage, r.remotes, "prerollback", release=r.source)
        console.say(f"  backup {r.backup['id']} ({r.backup['size']} bytes)")
        backups.say_pruned(r.backup)


def _switch_all(r: Rollback, release: str) -> None:
    """Every app host to `release`, checked for answering only (the schema may not match yet): a
    reload, or a restart drained at the load balancer where a reload cannot load it."""
    try:
        rolling.switch_all(r, lambda m: release, None, undo=True, what=f"switching to {release}",
                           report=lambda name, how: console.say(f"  [{name}] {how}; answering on {release}"))
    finally:
        rolling.undrain(r)


def switch_code(r: Rollback) -> None:
    _switch_all(r, r.target)


def switch_code_back(r: Rollback) -> None:
    _switch_all(r, r.source)


def migrate_database(r: Rollback) -> None:
    """Downgrade with the code serving now when it knows the target revision; else the
    target is newer (a roll forward): upgrade with the target's code."""
    if r.db_now == r.target_revision:
        return
    r.moved = True
    r.mover = r.mover or _mover(r)
    verb = "downgrade" if r.mover == r.source else "upgrade"
    dbops.flask_db(r.migrator, r.layout, r.mover, r.app, verb, r.target_revision or "base", timeout=3600)
    console.say(f"  database {verb}d to {r.target_revision}")


def _mover(r: Rollback) -> str:
    """The release whose code moves the database: the serving one when it knows the target revision."""
    known = dbops.flask_db(r.migrator, r.layout, r.source, r.app, "show", r.target_revision or "base", check=False)
    return r.source if known.exited == 0 else r.target


def migrate_database_back(r: Rollback) -> None:
    """Back to the revision the rollback started from, read rather than assumed (after ending
    a migration that a killed controller left running)."""
    if not r.moved:
        return
    server_tools.end_migrations(r.migrator, r.layout, MIGRATION_LOCK_KEY)
    if dbops.current_revision(r.migrator, r.layout) == r.db_now:
        return
    r.mover = r.mover or _mover(r)
    verb = "upgrade" if r.mover == r.source else "downgrade"
    dbops.flask_db(r.migrator, r.layout, r.mover, r.app, verb, r.db_now or "base", timeout=3600)


def verify(r: Rollback) -> None:
    if r.database == "keep":
        on_hosts("health", r.apps, lambda m: compat.serving_on_kept_schema(m, r.stage, r.target, r.live_path))
        return
    on_hosts("health", r.apps, lambda m: service.wait_healthy(
        m, r.stage.health_url, r.target, r.target_revision, r.stage.health_timeout))


STEPS = [
    pipeline.Step("choose", choose),
    pipeline.Step("backup", back_up),
    pipeline.Step("switch", switch_code, switch_code_back),
    pipeline.Step("database", migrate_database, migrate_database_back),
    pipeline.Step("health", verify),
]


def rollback(project: ProjectConfig, stage_name: str | None, to: str | None = None) -> str:
    """Roll the stage back to `to` (default: the previous good release)."""
    stage = load_stage(project, stage_name)
    with connect(stage) as remotes:
        r = Rollback(stage, remotes, Layout(stage.deploy_to), requested=to, app=project.app,
                     live_path=project.live_path, batch=stage.batch)
        console.heading(f"rollback on {stage.name}")
        notifier = notify.Notifier(stage.notify, project.root)
        try:
            with guard.guarded(r.migrator, r.layout, lock.holder("rollback", to), stage.name) as r.holder:
                guard.run_journaled(r, "rollback", STEPS, lambda outcome, error: _log(r, outcome, error))
        except DeployError as exc:
            notifier.send("failed", _event(r, "failed", str(exc)[:2000]))
            raise
        else:
            notifier.send("rolled_back", _event(r, "ok"))
        finally:
            r.close()
            notifier.wait()
    console.ok(f"rolled back {stage.name} to {r.target} (database at {r.target_revision})")
    return r.target


def _event(r: Rollback, outcome: str, error: str | None = None) -> dict:
    return events.event("rollback", r.stage, outcome, error, time.monotonic() - r.started, release=r.target,
                        previous=r.source, revisions=[r.target_revision] if r.target_revision else [])


def _log(r: Rollback, outcome: str, error: str | None = None) -> None:
    entry = {"time": deploylog.now(), "action": "rollback", "user": getpass.getuser(), "stage": r.stage.name,
             "from": r.source, "release": r.target, "revision_before": r.db_now,
             "revision_after": r.target_revision if outcome == "ok" else r.db_now,
             "backup": r.backup["id"] if r.backup else None, "outcome": outcome, "error": error,
             "duration": round(time.monotonic() - r.started, 3)}
    deploylog.append_or_warn(r.migrator, r.layout, entry)
    deploy_metrics.record(r.stage, r.apps, entry)


def recover(stage: StageConfig, remotes: dict[str, Remote], record: dict) -> list[str]:
    """Undo a rollback whose controller died: the database back where it was (after ending a
    migration it left running), the code back to the release that served, checked healthy."""
    r = Rollback.from_record(stage, remotes, record)
    r.batch = stage.batch
    names = [s.name for s in STEPS]
    r.moved = r.db_now != r.target_revision and (r.reached not in names
                                                 or names.index(r.reached) >= names.index("database"))
    try:
        pipeline.undo_from(STEPS, r, r.reached, stage.name)
    finally:
        r.close()
    _log(r, "recovered", f"the controller stopped during '{record.get('step')}'")
    if r.source:
        on_hosts("health", r.apps, lambda m: service.wait_healthy(
            m, r.stage.health_url, r.source, r.db_now, r.stage.health_timeout))
    backup = f"; its backup {r.backup['id']} is kept" if r.backup else ""
    return [f"serving {r.source or '(nothing)'} again at {r.db_now}{backup}"]
