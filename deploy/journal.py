"""The deploy's progress, journaled on the migrations host at every step, so that a
deploy killed on the controller (kill -9, a lost laptop) is found by the next
`fab` command on the stage and can be undone with `fab recover`.

Recovery observes before it acts: which hosts serve the new release and where
the database is are read from the hosts, not from the journal.
"""
from __future__ import annotations

from . import console, pipeline, steps
from .config import ProjectConfig
from .errors import DeployError
from .remote import guard, lock, service
from .remote.connection import Remote, connect
from .remote.layout import Layout
from .stages import load_stage

FIELDS = ("release_id", "commit", "ref", "app", "head", "digest", "db_before", "previous", "migrated", "backup", "reached",
          "migration_xids")


def save(d: steps.Deploy, step: str, state: str) -> None:
    """Journal the deploy as at `step` in `state` (running, undoing, succeeded)."""
    record = {name: getattr(d, name) for name in FIELDS}
    record.update(action="deploy", step=step, state=state, holder=d.holder)
    guard.write(d.migrator, d.layout, record)


def commit(d: steps.Deploy) -> None:
    """The deploy succeeded: from this record on, no command undoes it."""
    save(d, "finish", guard.SUCCEEDED)
    console.say(f"  recorded as succeeded: {d.release_id} (nothing undoes it from here)")


def journaling(d: steps.Deploy):
    """A pipeline event hook that records each step before it runs (and each undo)."""
    def on_event(event: str, step: str) -> None:
        if event == "start":  # journaled first: a step that was announced is one recover knows of
            d.reached = step
            save(d, step, "running")
            console.say(f"-> {step}")
        elif event == "undo":
            console.warn(f"undoing {step}")
            save(d, step, "undoing")
    return on_event


def recover(project: ProjectConfig, stage_name: str | None) -> list[str]:
    """Finish the undo of an interrupted deploy: old release back, database back, lock released.
    Takes the lock itself; a lock of a live operation is never touched."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    remotes = connect(stage)
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
        if not guard.unfinished(record):
            console.ok(f"nothing to recover on {stage.name}: no unfinished operation"
                       + (f" (the last deploy, {record.get('release_id')}, succeeded)" if record else ""))
            return []
        return _undo_deploy(project, stage, remotes, record)


def _undo_deploy(project: ProjectConfig, stage, remotes: dict[str, Remote], record: dict) -> list[str]:
    """Undo from the furthest step the deploy reached; each undo reads the hosts and the database."""
    console.heading(f"recovering {guard.describe(record)}")
    d = steps.Deploy(project, stage, remotes, record.get("ref") or "?", 0)
    for name in FIELDS:
        setattr(d, name, record.get(name))
    d.previous = record.get("previous") or {}
    d.migration_xids = record.get("migration_xids") or []
    d.holder = record.get("holder") or {}
    d.built = [r.name for r in d.build_remotes]
    d.switched = [r.name for r in d.apps if service.current_release(r, d.layout) == d.release_id]
    names = [s.name for s in steps.STEPS]
    furthest = record.get("reached") or record.get("step")  # an undo in progress went back from `reached`
    reached = names.index(furthest) if furthest in names else len(names) - 1
    d.migrated = reached >= names.index("migrate")  # undo_migrate then reads where the database really is
    cause = DeployError(f"the controller stopped during '{record.get('step')}'")
    outcome = pipeline.Outcome()
    pipeline.undo_steps(steps.STEPS[:reached + 1], d, outcome, lambda e, s: console.warn(f"undoing {s}"))
    notes = d.notes + (steps.verify_serving(d) if d.switched else [])
    steps.append_log(d, steps.log_entry(d, "recovered", {}, str(cause)))
    if outcome.undo_failures:
        raise DeployError("recovery could not undo: " + "; ".join(outcome.undo_failures),
                          hint=f"fix the cause and run fab recover --stage {stage.name} again")
    guard.clear(d.migrator, d.layout)
    for note in notes:
        console.say(f"  {note}")
    console.ok(f"recovered {stage.name}: undone {', '.join(outcome.undone) or 'nothing'}; lock released")
    return notes
