"""The guard of a stage's changes: its lock (ssh/lock.py) and the journal of the
operation in progress (`.journal.json` on the migrations host). An operation that
changes the stage takes the lock and refuses to start while an earlier one is
unfinished; an unfinished journal whose operation no longer holds a live lock is what
`fab status` reports from any controller and `fab recover` finishes.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from .. import console, pipeline
from ..errors import DeployError
from . import lock
from .connection import HostError, Remote
from .layout import Layout

SUCCEEDED = "succeeded"  # the commit: written atomically once every step is done; nothing to recover after it


def write(remote: Remote, layout: Layout, record: dict) -> None:
    """Replace the journal atomically (a temporary file renamed over it)."""
    script = 'cat > "$1.tmp" && mv "$1.tmp" "$1"'
    remote.run(["sh", "-c", script, "journal", layout.journal], input=json.dumps(record))


def save(op, action: str, step: str, state: str) -> None:
    """Journal `op` (a deploy, rollback or restore: its `to_record()`) as at `step` in `state`."""
    record = op.to_record()
    record.update(action=action, step=step, state=state, holder=op.holder, reached=op.reached)
    write(op.migrator, op.layout, record)


def progress(record: dict) -> dict:
    """The holder and the furthest step of a journaled operation, as keyword arguments for its
    from_record."""
    return {"holder": record.get("holder") or {}, "reached": record.get("reached") or record.get("step") or ""}


def journaling(op, action: str) -> Callable[[str, str], None]:
    """A pipeline hook that journals each step before it runs, and each undo."""
    def on_event(event: str, step: str) -> None:
        if event == "start":  # journaled first: a step that was announced is one recover knows of
            op.reached = step
            save(op, action, step, "running")
            console.say(f"-> {step}")
        elif event == "undo":
            console.warn(f"undoing {step}")
            save(op, action, step, "undoing")
    return on_event


def committing(action: str) -> Callable[[object], None]:
    """The pipeline's commit: the operation recorded as succeeded; nothing undoes it from there."""
    def commit(op) -> None:
        try:
            save(op, action, op.reached, SUCCEEDED)
        except HostError:  # the reply was lost, not necessarily the write: read what the host has
            if not _committed_there(op):
                raise
        console.say(f"  recorded as succeeded (nothing undoes the {action} from here)")
    return commit


def _committed_there(op, tries: int = 5) -> bool:
    """Whether the journal on the host says this operation succeeded (asked again a few times)."""
    for _ in range(tries):
        try:
            record = load(op.migrator, op.layout) or {}
        except HostError:
            time.sleep(2)
            continue
        return record.get("state") == SUCCEEDED and (record.get("holder") or {}).get("id") == op.holder.get("id")
    return False


def run_journaled(op, action: str, steps: list, log: Callable[[str, str | None], None]):
    """A rollback's or a restore's steps, journaled, with the commit; `log(outcome, error)`
    records the result. After a failure the journal stays only if the undo did not finish."""
    try:
        outcome = pipeline.run(steps, op, journaling(op, action), commit=committing(action))
    except pipeline.DeployFailed as failed:
        log("failed", failed.reason)
        if failed.outcome.undo_failures:
            failed.hint = f"fab recover --stage {op.stage.name} (it finishes the undo from the journal)"
        else:
            clear(op.migrator, op.layout)
        raise
    try:
        log("ok", None)
    finally:
        if outcome.release_interrupts():
            console.warn(f"Ctrl-C came after the {action} was recorded as succeeded: nothing was undone")
    return outcome


def load(remote: Remote, layout: Layout) -> dict | None:
    out = remote.run(["cat", layout.journal], check=False)
    if out.exited != 0:
        return None
    try:
        record = json.loads(out.stdout)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"step": "?", "state": "unreadable"}


def clear(remote: Remote, layout: Layout) -> None:
    remote.run(["rm", "-f", layout.journal])


def unfinished(record: dict | None) -> bool:
    return record is not None and record.get("state") != SUCCEEDED


def needs_recovery(record: dict | None, holder: dict | None) -> bool:
    """An unfinished operation whose own process no longer holds the lock alive."""
    if not unfinished(record):
        return False
    writer = record.get("holder") or {}
    running = (holder is not None and writer.get("id") is not None and holder.get("id") == writer.get("id")
               and lock.alive(holder))
    return not running


def describe(record: dict) -> str:
    where = f"at step '{record.get('step')}' ({record.get('state')})"
    if record.get("state") == "undoing" and record.get("reached"):
        where = f"while undoing '{record.get('step')}', having reached '{record.get('reached')}'"
    subject = record.get("subject") or f"deploy of release {record.get('release_id')} ({record.get('ref')})"
    return f"{subject} stopped {where}, by {lock.describe(record.get('holder', {}))}"


def interrupted(remote: Remote, layout: Layout) -> dict | None:
    """The journal of an operation that stopped before it finished and is not running, if any."""
    record = load(remote, layout)
    return record if needs_recovery(record, lock.read(remote, layout) if unfinished(record) else None) else None


def unfinished_error(record: dict, stage: str) -> DeployError:
    return DeployError(f"an earlier {record.get('action', 'deploy')} was interrupted: {describe(record)}",
                       hint=f"fab recover --stage {stage} (puts the old release and database back)")


@contextmanager
def guarded(remote: Remote, layout: Layout, info: dict, stage: str) -> Iterator[dict]:
    """The stage's lock for an operation that changes it, refused while an earlier one is
    unfinished (its controller died, or its undo failed): only `fab recover` goes on from there."""
    try:
        lock.acquire(remote, layout, info, stage)
    except lock.LockHeld:
        record = interrupted(remote, layout)
        if record:
            raise unfinished_error(record, stage) from None
        raise
    with lock.kept(remote, layout, info):
        record = load(remote, layout)  # under the lock: nobody else runs, so an unfinished journal is orphaned
        if unfinished(record):
            raise unfinished_error(record, stage)
        yield info


