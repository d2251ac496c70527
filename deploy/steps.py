"""The deploy as a list of steps, each with its undo (see pipeline.py).

preflight -> build -> backup -> migrate -> compat -> switch -> finish. Nothing
changes on a server before `build`; the old release serves until `switch`, checked
to work on the migrated schema (compat.py); a failure at any point undoes, in
reverse, what was done on every host. Post revisions run after the commit (phases.py).
"""
from __future__ import annotations

import getpass
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import compat, console, database_steps, phases, rolling, source
from .config import ProjectConfig, load_project
from .errors import DeployError, MigrationError
from .lint import lint_revisions
from .migrations import MigrationGraph, Revision
from .pipeline import Step
from .ssh import build, cleanup, dbops, deploy_metrics, deploylog, guard, service
from .ssh.connection import Remote, on_hosts
from .ssh.layout import Layout
from .stages import StageConfig
from .templates import release_files
from .wheels import wheelhouse


@dataclass
class Deploy(rolling.Switching):
    """What the steps share: decided once on the controller, the same for every host."""

    project: ProjectConfig
    stage: StageConfig
    remotes: dict[str, Remote]
    ref: str
    batch: int
    layout: Layout = field(init=False)
    commit: str = ""
    release_id: str = ""
    scratch: Path | None = None
    export_dir: Path | None = None
    app: str = ""  # the commit's deploy.toml [project] app, read in preflight
    target: ProjectConfig | None = None  # the commit's deploy.toml, read in preflight
    graph: MigrationGraph | None = None
    head: str | None = None
    digest: str = ""
    db_before: str | None = None
    pending: list[Revision] = field(default_factory=list)
    pre: list[Revision] = field(default_factory=list)    # run before the switch
    post: list[Revision] = field(default_factory=list)   # after it (phases.py)
    backup: dict | None = None
    previous: dict[str, str | None] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)
    switched: list[str] = field(default_factory=list)
    migrated: bool = False
    migrated_to: str | None = None  # the revision the pre revisions reached
    compatible: bool = False  # the serving release was checked to work on the migrated schema (compat.py)
    schema_kept: bool = False  # a failed deploy left the expanded schema (undo_migrate)
    migration_xids: list[int] = field(default_factory=list)  # the transaction(s) that ran the migration
    reached: str = ""  # the furthest step started: an undo must go back from there, wherever it stopped
    notes: list[str] = field(default_factory=list)
    holder: dict = field(default_factory=dict)  # the stage lock's holder: this deploy's identity

    def __post_init__(self) -> None:
        self.layout = Layout(self.stage.deploy_to)

    def to_record(self) -> dict:
        """What the journal keeps of this deploy: what `fab recover` needs to undo it (from_record)."""
        return {"release_id": self.release_id, "commit": self.commit, "ref": self.ref, "app": self.app,
                "head": self.head, "digest": self.digest, "db_before": self.db_before, "previous": self.previous,
                "migrated": self.migrated, "backup": self.backup, "migration_xids": self.migration_xids,
                "migrated_to": self.migrated_to, "compatible": self.compatible}

    @classmethod
    def from_record(cls, project: ProjectConfig, stage: StageConfig, remotes: dict[str, Remote], record: dict) -> "Deploy":
        return cls(project, stage, remotes, record.get("ref") or "?", 0,
                   release_id=record.get("release_id") or "", commit=record.get("commit") or "",
                   app=record.get("app") or "", head=record.get("head"), digest=record.get("digest") or "",
                   db_before=record.get("db_before"), previous=record.get("previous") or {},
                   migrated=bool(record.get("migrated")), backup=record.get("backup"),
                   migration_xids=record.get("migration_xids") or [], compatible=bool(record.get("compatible")),
                   migrated_to=record.get("migrated_to"), **guard.progress(record))

    @property
    def serves_at(self) -> str | None:
        """The revision the new release serves on after the switch: the last pre revision's."""
        return self.pre[-1].id if self.pre else self.db_before

    def remove_scratch(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    @property
    def build_remotes(self) -> list[Remote]:
        names = {h.name for h in self.stage.app_hosts} | {self.stage.migrations_host.name}
        return [r for n, r in self.remotes.items() if n in names]

    def say(self, host: str, text: str) -> None:
        console.say(f"  [{host}] {text}")


# preflight ------------------------------------------------------------------

def preflight(d: Deploy) -> None:
    """Everything checked before anything changes: hosts, disk, ref, migrations, lint, database."""
    def host_check(r: Remote) -> str:
        facts = build.host_facts(r, d.layout)
        lacking = build.unsupported(facts)
        if lacking:
            raise DeployError(f"{r.name}: " + "; ".join(lacking), hint="install it on the host, then deploy again")
        if facts["missing"]:
            raise DeployError(f"{r.name}: missing {', '.join(facts['missing'])}", hint=f"fab setup --stage {d.stage.name}")
        if facts["free"] < d.stage.min_free_mb:
            raise DeployError(f"{r.name}: only {facts['free']} MB free under {d.layout.root} (min_free_mb is "
                              f"{d.stage.min_free_mb})", hint="free some space (old releases, backups) and deploy again")
        d.previous[r.name] = facts["current"]
        return f"reachable, {facts['free']} MB free, current release {d.previous[r.name] or '(none)'}"

    for name, text in on_hosts("preflight", d.build_remotes, host_check).items():
        d.say(name, text)
    rolling.check_balancer(d)
    mirror = source.mirror(d.project, d.stage.name, d.stage.repo)
    d.commit = source.resolve(mirror, d.ref, d.stage.repo)
    d.scratch = Path(tempfile.mkdtemp(prefix="deploy-export-"))
    d.export_dir = source.export(mirror, d.commit, d.scratch / "src")
    d.target = target = load_project(d.export_dir)
    d.app = target.app
    d.graph = MigrationGraph(target.migrations_dir)
    try:
        d.head = d.graph.single_head()
    except MigrationError as exc:
        raise DeployError(f"{d.ref} ({d.commit[:12]}): {exc}", hint=exc.hint) from None
    d.digest = source.lock_hash(d.export_dir, target.lock)
    d.release_id = new_release_id(d.commit, set(d.previous.values()))
    console.say(f"  ref {d.ref} = {d.commit[:12]}; release {d.release_id}; migrations head {d.head}")
    facts = dbops.database_facts(d.migrator, d.layout)
    d.db_before = facts["revision"]
    _check_database(d, target, empty=facts.get("tables") == 0)
    on_backup_host = facts if d.backup_remote is d.migrator else dbops.database_facts(d.backup_remote, d.layout)
    old = dbops.old_clients(on_backup_host)
    if old and d.pending:
        raise DeployError(f"{d.backup_remote.name}: " + "; ".join(old) + ": the pre-deploy backup cannot be taken",
                          hint="install it on the backup host, then deploy again")
    for problem in old:
        console.warn(f"{d.backup_remote.name}: {problem}: backups will fail")


def new_release_id(commit: str, taken: set[str | None]) -> str:
    """UTC time and commit: sorts by age, the same on every host, never a release that exists."""
    while True:
        release_id = deploylog.stamp() + "-" + commit[:8]
        if release_id not in taken:
            return release_id
        time.sleep(0.2)


def _check_database(d: Deploy, target: ProjectConfig, empty: bool) -> None:
    """The database's revision is known to the commit; its pending revisions pass lint, unless the
    database is empty (no table at all): a history run into it blocks nobody."""
    if d.db_before is not None and d.db_before not in d.graph:
        raise DeployError(f"the database is at {d.db_before}, which {d.commit[:12]} does not know",
                          hint="deploy a commit that contains that revision, or check the database")
    d.pending = d.graph.pending((d.db_before,) if d.db_before else ())
    try:  # into an empty database the whole history runs before the switch: no code serves on it
        d.pre, d.post = (d.pending, []) if empty else phases.split(d.pending)
    except MigrationError as exc:
        raise DeployError(f"{d.ref} ({d.commit[:12]}): {exc}", hint=exc.hint) from None
    if d.pending and empty:
        console.say("  the database is empty: its history runs into it, which blocks nobody (not linted)")
    elif d.pending:
        report = lint_revisions(target, d.graph, d.pending)
        if report.failed:
            raise DeployError("lint failed for the migrations this deploy would run:\n" + report.render(target.root),
                              hint="fix them (or waive with a reason), commit, push, deploy again")
    console.say(f"  database at {d.db_before or '(empty)'}; to run: "
                + (", ".join(r.label() for r in d.pre) or "nothing")
                + (f"; after the switch: {', '.join(r.label() for r in d.post)}" if d.post else ""))


# build ----------------------------------------------------------------------

def build_release(d: Deploy) -> None:
    version, machine = build.server_python(d.migrator)
    needs_env = [r for r in d.build_remotes if not build.environment_ready(r, d.layout, d.digest)]
    wheels = (wheelhouse(source.cache(d.project, "wheels"), d.export_dir / d.target.lock, d.digest, version, machine)
              if needs_env else None)
    files = release_files(d.target.app, d.target.health_path, d.target.live_path, d.stage.service)
    meta = {"release": d.release_id, "ref": d.ref, "commit": d.commit, "revision": d.head, "app": d.app,
            "lock": d.digest, "status": "building", "user": getpass.getuser(),
            "time": deploylog.now()}

    def on_host(r: Remote) -> str:
        d.built.append(r.name)
        build.fetch_and_export(r, d.layout, d.stage.repo, d.commit, d.release_id)
        installed = "environment reused (no dependency change)"
        if r in needs_env:
            build.install_environment(r, d.layout, d.digest, wheels)
            installed = f"environment {d.digest} installed from uploaded wheels"
        build.finish_release(r, d.layout, d.release_id, d.digest, meta, files)
        build.check_boot(r, d.layout, d.release_id, d.target.gunicorn_config)
        return installed + "; the app loads"

    for name, text in on_hosts("build", d.build_remotes, on_host).items():
        d.say(name, f"built {d.release_id}: {text}")


def undo_build(d: Deploy) -> None:
    if not d.release_id:
        return

    def mark(r: Remote) -> None:
        if r.run(["test", "-d", d.layout.release(d.release_id)], check=False).exited == 0:
            build.set_status(r, d.layout, d.release_id, "failed")
    on_hosts("marking the release failed", [d.remotes[n] for n in d.built], mark)


# switch ---------------------------------------------------------------------

def switch(d: Deploy) -> None:
    rolling.switch_all(d, lambda r: d.release_id, d.serves_at,
                       report=lambda name, how: d.say(name, f"{how}; healthy on {d.release_id} at {d.serves_at}"))


def undo_switch(d: Deploy) -> None:
    def first_release(r: Remote) -> None:  # nothing was deployed before: stop it and remove `current`
        service.systemctl(r, "stop", d.stage.service, check=False)
        service.unswitch(r, d.layout)
    failures = []  # every part is tried: one unreachable host must not keep the others switched or drained
    for part in (lambda: on_hosts("stopping the first release",
                                  [d.remotes[n] for n in d.switched if d.previous.get(n) is None], first_release),
                 lambda: rolling.switch_all(d, lambda r: d.previous.get(r.name) if r.name in d.switched else None,
                                            None, undo=True),
                 lambda: rolling.undrain(d)):
        try:
            part()
        except DeployError as exc:
            failures.append(exc)
    if d.switched:
        d.notes.append(f"switched back on {', '.join(d.switched)}")
    if failures:
        raise failures[0] if len(failures) == 1 else DeployError(
            "\n".join(str(f) for f in failures), hint="; ".join(f.hint for f in failures if f.hint) or None)


# finish ---------------------------------------------------------------------

def verify_serving(d: Deploy) -> list[str]:
    """After an undo: each app host serves its previous release, healthy at the database's revision."""
    def check(r: Remote) -> str:
        previous = d.previous.get(r.name)
        if previous is None:
            return "nothing deployed before: the service is stopped"
        linked = service.current_release(r, d.layout)
        if linked != previous:  # the old code may answer, but a restart would start `linked`
            raise DeployError(f"`current` points at {linked}, not at the previous release {previous}",
                              hint=f"fab rollback --stage {d.stage.name} --to {previous}")
        if d.schema_kept:
            return compat.serving_on_kept_schema(r, d.stage, previous, (d.target or d.project).live_path,
                                                 hint=f"read its log on {r.name}: sudo journalctl -u {d.stage.service}")
        body = service.wait_healthy(r, d.stage.health_url, previous, d.db_before, d.stage.health_timeout)
        return f"serving {previous}, healthy at {body.get('revision')}"
    return [f"{name}: {text}" for name, text in on_hosts("checking the old release", d.apps, check).items()]


def finish(d: Deploy) -> None:
    on_hosts("marking the release good", d.build_remotes,
             lambda r: build.set_status(r, d.layout, d.release_id, "good"))


def clean_up(d: Deploy) -> None:
    """After the commit: the stage's keep_releases (a failure here is reported, never undone)."""
    for name, removed in on_hosts("cleanup", d.build_remotes,
                                  lambda r: cleanup.keep_releases(r, d.layout, d.stage.keep_releases)).items():
        if removed:
            d.say(name, "removed old releases: " + ", ".join(removed))


def log_entry(d: Deploy, outcome: str, timings: dict[str, float], error: str | None = None) -> dict:
    return {"time": deploylog.now(), "action": "deploy", "user": getpass.getuser(),
            "stage": d.stage.name, "ref": d.ref, "commit": d.commit, "release": d.release_id,
            "revision_before": d.db_before, "revision_after": d.serves_at if outcome == "ok" else d.migrated_to if d.schema_kept else d.db_before,
            "backup": d.backup["id"] if d.backup else None, "timings": {k: round(v, 3) for k, v in timings.items()},
            "outcome": outcome, "error": error, "undone": d.notes}


def append_log(d: Deploy, entry: dict) -> None:
    """deploy.log on the migrations host, and the deploy metrics on every app host."""
    deploylog.append(d.migrator, d.layout, entry)
    deploy_metrics.record(d.stage, d.apps, entry)


STEPS = [
    Step("preflight", preflight),
    Step("build", build_release, undo_build),
    Step("backup", database_steps.backup),
    Step("migrate", database_steps.migrate, database_steps.undo_migrate),
    Step("compat", compat.check_serving),
    Step("switch", switch, undo_switch),
    Step("finish", finish),
]
