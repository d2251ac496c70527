"""Pre and post revisions (deploy_runtime.phases marks them), and the post phase.

A deploy runs its pending pre revisions before the switch, while the old release serves
on them, and its post revisions (contracts: they drop what the old code used) once every
app host serves the new code. `[stages.S] post_migrations = "manual"` holds them back for
`fab migrate --post`. The graph stays one chain, so a post revision that has not run
blocks every pre revision after it.
"""
from __future__ import annotations

import getpass
import shutil
import tempfile
import time
from pathlib import Path

from . import backups, console, source
from .config import ProjectConfig, load_project
from .console import indent
from .errors import DeployError, MigrationError
from .migrations import MigrationGraph, Revision, error_summary
from .ssh import build, dbops, deploylog, guard, lock, service
from .ssh.connection import HostError, Remote, connect, on_hosts
from .ssh.layout import Layout
from .stages import StageConfig, load_stage


def split(pending: list[Revision]) -> tuple[list[Revision], list[Revision]]:
    """The pending revisions that run before the switch, and those that run after it; a pre
    revision after a pending post one is refused, with how to get past it."""
    first_post = next((i for i, r in enumerate(pending) if r.phase == "post"), len(pending))
    pre, post = pending[:first_post], pending[first_post:]
    stuck = [r for r in post if r.phase == "pre"]
    if stuck:
        raise MigrationError(
            f"the pre revision {stuck[0].label()} comes after the post revision {post[0].label()}, which has not "
            "run: a pre revision runs before the switch, and a post one only once no host serves code that "
            "needs what it removes",
            hint="first deploy a commit whose migrations end at the post revision and let it run (fab migrate --post "
                 "if the stage holds post revisions back); then deploy this one. Or mark the later revisions post too")
    return pre, post


def run_post(stage: StageConfig, migrator: Remote, release_id: str, app: str, revisions: list[Revision]) -> str:
    """Run the post `revisions` with the serving release's code; the revision after them. On
    failure nothing is switched back: the error says where the database is and what to run."""
    layout = Layout(stage.deploy_to)
    before = dbops.current_revision(migrator, layout)
    target = revisions[-1].id
    console.say(f"-> post revisions: {', '.join(r.label() for r in revisions)}")
    started = time.monotonic()
    entry = {"time": deploylog.now(), "action": "migrate-post", "user": getpass.getuser(), "stage": stage.name,
             "release": release_id, "revision_before": before, "revisions": [r.id for r in revisions]}
    try:
        dbops.flask_db(migrator, layout, release_id, app, "upgrade", target, env=dbops.migration_env(stage),
                       timeout=3600)
    except (HostError, KeyboardInterrupt) as exc:
        now = _revision_or_unknown(migrator, layout)
        reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else \
            error_summary(exc.output) if exc.output else str(exc)
        deploylog.append_or_warn(migrator, layout, {**entry, "revision_after": now, "outcome": "failed", "error": reason})
        raise DeployError(
            f"the post revisions failed on {migrator.name}:\n{indent(reason)}\nthe release {release_id} serves on "
            f"(nothing was switched back); the database is at {now}",
            hint=f"fix the revision, then fab migrate --post --stage {stage.name}") from None
    after = dbops.current_revision(migrator, layout)
    deploylog.append_or_warn(migrator, layout, {**entry, "revision_after": after, "outcome": "ok",
                                                "seconds": round(time.monotonic() - started, 3)})
    console.say(f"  [{migrator.name}] database {before} -> {after} (post)")
    return after


def _revision_or_unknown(migrator: Remote, layout: Layout) -> str:
    try:
        return dbops.current_revision(migrator, layout) or "(empty)"
    except DeployError:
        return "unknown (the host did not answer)"


def backup_before_post(stage: StageConfig, remotes: dict[str, Remote], release_id: str) -> dict:
    """`fab migrate --post`'s own backup: rows written since the deploy's are in it too."""
    taken = backups.take(stage, remotes, "prepost", release=release_id, content=True)
    console.say(f"  backup {taken['id']}: {taken['size']} bytes")
    return taken


def migrate_post(project: ProjectConfig, stage_name: str | None) -> str | None:
    """`fab migrate --post`: the serving release's pending post revisions, backed up first,
    under the stage's lock; the revision after them."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        migrator = remotes[stage.migrations_host.name]
        with guard.guarded(migrator, layout, lock.holder("migrate", "--post"), stage.name):
            release_id = _serving_release(stage, remotes, layout)
            meta = next((r for r in build.list_releases(migrator, layout) if r["id"] == release_id), {})
            db = dbops.current_revision(migrator, layout)
            pending = _pending_of(project, stage, meta, db)
            if not pending:
                console.ok(f"nothing to run: the database is at {db}, the head of {release_id}")
                return db
            pre = [r for r in pending if r.phase != "post"]
            if pre:
                raise DeployError(f"the database is at {db}, and {', '.join(r.label() for r in pre)} are pre "
                                  f"revisions of {release_id}, which a deploy runs before its switch",
                                  hint=f"fab deploy --stage {stage.name} (it runs them; check fab status first)")
            backup_before_post(stage, remotes, release_id)
            after = run_post(stage, migrator, release_id, meta.get("app") or project.app, pending)
    console.ok(f"post revisions run: the database is at {after}")
    return after


def _serving_release(stage: StageConfig, remotes: dict[str, Remote], layout: Layout) -> str:
    """The release every app host serves; refused while they differ (a deploy half done)."""
    serving = on_hosts("reading the current release", [remotes[h.name] for h in stage.app_hosts],
                       lambda r: service.current_release(r, layout))
    releases = set(serving.values())
    if len(releases) != 1 or None in releases:
        listed = ", ".join(f"{host}: {rel or '(none)'}" for host, rel in serving.items())
        raise DeployError(f"the app hosts do not all serve one release ({listed})",
                          hint=f"fab status --stage {stage.name}; deploy or roll back until they agree")
    return releases.pop()


def _pending_of(project: ProjectConfig, stage: StageConfig, meta: dict, db: str | None) -> list[Revision]:
    """The revisions between the database and the release's head, read from the release's commit."""
    if not meta.get("commit") or not meta.get("revision"):
        raise DeployError(f"the release {meta.get('id')} does not record its commit and head revision",
                          hint="deploy again; its post revisions run after the switch")
    scratch = Path(tempfile.mkdtemp(prefix="deploy-post-"))
    try:
        exported = source.export(source.mirror(project, stage.name, stage.repo), meta["commit"], scratch / "src")
        graph = MigrationGraph(load_project(exported).migrations_dir)
        return graph.pending((db,) if db else (), meta["revision"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
