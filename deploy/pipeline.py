"""The deploy as data: steps that each declare their undo, run by one engine.

Forward, each step runs in turn; when one fails (an error, a lost host,
Ctrl-C), the engine undoes that step and every step before it, in reverse
order, and raises DeployFailed naming the step, the cause and what was undone.
Rollback is this same engine going backwards, not a second code path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import console, interrupts
from .errors import DeployError


@dataclass
class Step:
    name: str
    do: Callable[[Any], None]
    undo: Callable[[Any], None] | None = None


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    undo_failures: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    failed_at: float | None = None  # time.monotonic() when a step failed and the undo began
    held: interrupts.Held | None = None  # after the commit: Ctrl-C held back until the caller releases it

    def release_interrupts(self) -> bool:
        """After a committed run, when its caller is done: Ctrl-C acts again; True if one came."""
        return self.held.release() if self.held else False


class DeployFailed(DeployError):
    """A step failed; every earlier step was undone (or the message says which was not)."""

    def __init__(self, step: str, cause: BaseException, outcome: Outcome, hint: str | None = None) -> None:
        if isinstance(cause, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C)"
        else:
            reason = cause.message if isinstance(cause, DeployError) else f"{type(cause).__name__}: {cause}"
        self.step, self.cause, self.outcome, self.reason = step, cause, outcome, reason
        super().__init__("", hint=hint or (cause.hint if isinstance(cause, DeployError) else None))
        self.refresh()
        self.exit_code = 130 if isinstance(cause, KeyboardInterrupt) else 1

    def refresh(self) -> None:
        """Rebuild the message from the outcome (a check after the undo may add a failure)."""
        lines = [f"step '{self.step}' failed: {self.reason}"]
        if self.outcome.undone:
            lines.append("undone: " + ", ".join(self.outcome.undone))
        lines += [f"NOT undone: {f}" for f in self.outcome.undo_failures]
        self.message = "\n".join(lines)
        self.args = (self.message,)


def run(steps: list[Step], ctx: Any, on_event: Callable[[str, str], None] = lambda event, step: None,
        commit: Callable[[Any], None] | None = None) -> Outcome:
    """Run `steps` on `ctx`; on failure undo in reverse and raise DeployFailed.

    `commit`, when given, records success once every step is done (the journal). From the
    commit on, Ctrl-C is held back, and stays held when this returns, so that what the caller
    does after (its log, its cleanup) is never cut short either: the caller ends the hold
    with `outcome.release_interrupts()`, which says whether Ctrl-C came. Nothing is undone
    after the commit.
    """
    outcome = Outcome()
    committed = False
    step = steps[0]
    started = time.monotonic()
    try:
        for step in steps:
            started = time.monotonic()
            on_event("start", step.name)
            step.do(ctx)
            outcome.timings[step.name] = time.monotonic() - started
            outcome.done.append(step.name)
            on_event("done", step.name)
        if commit is not None:
            outcome.held = interrupts.hold()
            commit(ctx)
            committed = True
    except BaseException as exc:  # noqa: B902 - Ctrl-C must roll back too
        if committed:  # cannot happen while held; kept so that nothing committed is ever undone
            return outcome
        held, outcome.held = outcome.held or interrupts.hold(_undo_notice), None  # (a failed commit's hold)
        try:
            outcome.failed_at = time.monotonic()
            outcome.timings.setdefault(step.name, outcome.failed_at - started)
            _observe(on_event, "failed", step.name)
            undo_steps([*(s for s in steps if s.name in outcome.done and s is not step), step], ctx, outcome,
                       on_event)
        finally:
            held.release()
        raise DeployFailed(step.name, exc, outcome) from exc
    return outcome


def undo_steps(steps: list[Step], ctx: Any, outcome: Outcome, on_event: Callable[[str, str], None]) -> None:
    """Undo `steps` in reverse; each ends undone or reported failed, and the rest still run.

    Ctrl-C is held back meanwhile (said once): an undo cut in half would leave the stage
    in a state nobody chose. kill -9 still stops it; the journal then leads `fab recover`.
    """
    with interrupts.deferred(_undo_notice, reraise=False):
        for step in reversed(steps):
            if step.undo is None:
                continue
            _observe(on_event, "undo", step.name)
            try:
                step.undo(ctx)
                outcome.undone.append(step.name)
            except BaseException as exc:  # noqa: B902 - keep undoing the rest; report this one
                outcome.undo_failures.append(f"{step.name}: {_reason(exc)}")


def undo_from(steps: list[Step], ctx: Any, furthest: str, stage: str) -> Outcome:
    """`fab recover`: undo every step up to the furthest one an operation reached (read from
    its journal); raise when an undo fails, so the journal stays for another try."""
    names = [s.name for s in steps]
    reached = names.index(furthest) if furthest in names else len(names) - 1
    outcome = Outcome()
    undo_steps(steps[:reached + 1], ctx, outcome, lambda event, step: console.warn(f"undoing {step}"))
    if outcome.undo_failures:
        raise DeployError("recovery could not undo: " + "; ".join(outcome.undo_failures),
                          hint=f"fix the cause and run fab recover --stage {stage} again")
    return outcome


def _undo_notice() -> None:
    console.warn("Ctrl-C: the undo goes on until it is done (kill -9 leaves it to fab recover)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return str(exc) or type(exc).__name__


def _observe(on_event: Callable[[str, str], None], event: str, step: str) -> None:
    """Tell the hook (journal, progress) during an undo: if it fails (a full disk, a lost
    host), the undo still runs; the hook's error is only reported."""
    try:
        on_event(event, step)
    except Exception as exc:
        console.warn(f"while undoing {step}: {exc}")
