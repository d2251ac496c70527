"""The deploy's progress, journaled on the migrations host at every step, so that a
deploy killed on the controller (kill -9, a lost laptop) is found by the next
`fab` command on the stage and can be undone with `fab recover`.

Recovery observes before it acts: which hosts serve the new release and where
the database is are read from the hosts, not from the journal.
"""
from __future__ import annotations

import json
import os
import socket

from . import console, pipeline, steps
from .config import ProjectConfig
from .errors import DeployError
from .remote import lock, service
from .remote.connection import Remote, connect
from .remote.layout import Layout
from .stages import load_stage

FIELDS = ("release_id", "commit", "ref", "app", "head", "digest", "db_before", "previous", "migrated", "backup", "reached")


def save(d: steps.Deploy, step: str, state: str) -> None:
    record = {name: getattr(d, name) for name in FIELDS}
    record.update(step=step, state=state, holder=lock.holder("deploy", d.ref))
    script = 'cat > "$1.tmp" && mv "$1.tmp" "$1"'
    d.migrator.run(["sh", "-c", script, "journal", d.layout.journal], input=json.dumps(record))


def load(remote: Remote, layout: Layout) -> dict | None:
    out = remote.run(["cat", layout.journal], check=False)
    if out.exited != 0:
        return None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {"step": "?", "state": "unreadable"}


def clear(remote: Remote, layout: Layout) -> None:
    remote.run(["rm", "-f", layout.journal])


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


def holder_alive(record: dict) -> bool:
    """Whether the controller process that wrote the journal still runs (known only on its own machine)."""
    holder = record.get("holder", {})
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell from here: assume it runs
    try:
        os.kill(int(holder.get("pid", 0)), 0)
        return True
    except (OSError, ValueError):
        return False


def describe(record: dict) -> str:
    where = f"at step '{record.get('step')}' ({record.get('state')})"
    if record.get("state") == "undoing" and record.get("reached"):
        where = f"while undoing '{record.get('step')}', having reached '{record.get('reached')}'"
    return (f"release {record.get('release_id')} ({record.get('ref')}) stopped {where}, "
            f"by {lock.describe(record.get('holder', {}))}")


def interrupted(remote: Remote, layout: Layout) -> dict | None:
    """The journal of a deploy whose controller is gone, if any."""
    record = load(remote, layout)
    if record is None or holder_alive(record):
        return None
    return record


def recover(project: ProjectConfig, stage_name: str | None) -> list[str]:
    """Finish the undo of an interrupted deploy: old release back, database back, lock released."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    remotes = connect(stage)
    migrator = remotes[stage.migrations_host.name]
    record = load(migrator, layout)
    if record is None:
        console.ok(f"nothing to recover on {stage.name}: no interrupted deploy")
        return []
    if holder_alive(record):
        raise DeployError(f"the deploy is still running: {describe(record)}",
                          hint="wait for it; if its controller is gone, run recover from that machine")
    console.heading(f"recovering {describe(record)}")
    d = steps.Deploy(project, stage, remotes, record.get("ref") or "?", 0)
    for name in FIELDS:
        setattr(d, name, record.get(name))
    d.previous = record.get("previous") or {}
    d.built = [r.name for r in d.build_remotes]
    d.switched = [r.name for r in d.apps if service.current_release(r, layout) == d.release_id]
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
    clear(migrator, layout)
    lock.release(migrator, layout)
    for note in notes:
        console.say(f"  {note}")
    console.ok(f"recovered {stage.name}: undone {', '.join(outcome.undone) or 'nothing'}; lock released")
    return notes
