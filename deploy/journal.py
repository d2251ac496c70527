"""`fab recover`: a deploy, rollback, restore or env change whose controller was killed (kill -9, a
lost laptop), or whose undo failed, is found from its journal (ssh/guard.py) by the
next `fab` command on the stage, and undone here.

Recovery observes before it acts: which hosts serve the new release and where
the database is are read from the hosts, not from the journal.
"""
from __future__ import annotations

from . import app_env, console, events, notify, pgbr_restore, pipeline, restore, rollback, steps
from .config import ProjectConfig
from .errors import DeployError
from .ssh import guard, lock, service
from .ssh.connection import Remote, connect
from .ssh.layout import Layout
from .stages import load_stage


def recover(project: ProjectConfig, stage_name: str | None) -> list[str]:
    """Undo the deploy, rollback or restore the journal shows unfinished (its controller died,
    or its undo failed). Takes the lock itself; a lock of a live operation is never touched."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        migrator = remotes[stage.migrations_host.name]
        record = guard.load(migrator, layout)
        holder = lock.read(migrator, layout)
        if guard.unfinished(record) and not guard.needs_recovery(record, holder):
            raise DeployError(f"the operation is still running: {guard.describe(record)}",
                              hint="wait for it; `fab status` shows when it stops")
        mine = lock.holder("recover", None)
        if holder is not None and lock.alive(holder):
            raise lock.held_error(holder, stage.name)
        if holder is not None:
            lock.take_over(migrator, layout, holder, mine, stage.name)
            console.warn(f"took over the lock of {lock.describe(holder)}, which is no longer running")
        else:
            lock.acquire(migrator, layout, mine, stage.name)
        with lock.kept(migrator, layout, mine):
            record = guard.load(migrator, layout)  # again, under the lock: another recover may have finished it
            if not guard.unfinished(record):
                console.ok(f"nothing to recover on {stage.name}: no unfinished operation"
                           + (f" (the last {record.get('action', 'deploy')} succeeded)" if record else ""))
                return []
            console.heading(f"recovering {guard.describe(record)}")
            action = record.get("action", "deploy")
            if action == "restore" and record.get("engine") == "pgbackrest":
                notes = pgbr_restore.recover(stage, remotes, record)
            elif action == "restore":
                notes = restore.recover(stage, remotes, record)
            elif action == "env":
                notes = app_env.recover(stage, remotes, record)
            elif action == "rollback":
                notes = rollback.recover(stage, remotes, record)
            else:
                notes = _undo_deploy(project, stage, remotes, record)
            guard.clear(migrator, layout)
        for note in notes:
            console.say(f"  {note}")
        console.ok(f"recovered {stage.name}: the {action} is undone; lock released")
        notify.post(stage.notify, project.root, "recovered", events.event(
            action, stage, "recovered", guard.describe(record), release=record.get("release_id") or record.get("target")))
        return notes


def _undo_deploy(project: ProjectConfig, stage, remotes: dict[str, Remote], record: dict) -> list[str]:
    """Undo from the furthest step the deploy reached; each undo reads the hosts and the database."""
    d = steps.Deploy.from_record(project, stage, remotes, record)
    d.built = [r.name for r in d.build_remotes]
    d.switched = [r.name for r in d.apps if service.current_release(r, d.layout) == d.release_id]
    names = [s.name for s in steps.STEPS]
    d.migrated = d.reached not in names or names.index(d.reached) >= names.index("migrate")  # then read, not assumed
    try:
        pipeline.undo_from(steps.STEPS, d, d.reached, stage.name)
    finally:
        d.close()
        steps.append_log(d, steps.log_entry(d, "recovered", {}, f"the controller stopped during '{record.get('step')}'"))
    return d.notes + (steps.verify_serving(d) if d.switched else [])
