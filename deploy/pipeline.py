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

from . import console
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


class DeployFailed(DeployError):
    """A step failed; every earlier step was undone (or the message says which was not)."""

    def __init__(self, step: str, cause: BaseException, outcome: Outcome, hint: str | None = None) -> None:
        if isinstance(cause, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C)"
        else:
            reason = cause.message if isinstance(cause, DeployError) else f"{type(cause).__name__}: {cause}"
        lines = [f"step '{step}' failed: {reason}"]
        if outcome.undone:
            lines.append("undone: " + ", ".join(outcome.undone))
        lines += [f"NOT undone: {f}" for f in outcome.undo_failures]
        super().__init__("\n".join(lines), hint=hint or (cause.hint if isinstance(cause, DeployError) else None))
        self.step, self.cause, self.outcome, self.reason = step, cause, outcome, reason
        self.exit_code = 130 if isinstance(cause, KeyboardInterrupt) else 1


def run(steps: list[Step], ctx: Any, on_event: Callable[[str, str], None] = lambda event, step: None) -> Outcome:
    """Run `steps` on `ctx`; on failure undo in reverse and raise DeployFailed."""
    outcome = Outcome()
    for step in steps:
        started = time.monotonic()
        try:
            on_event("start", step.name)
            step.do(ctx)
        except BaseException as exc:  # noqa: B902 - Ctrl-C must roll back too
            outcome.failed_at = time.monotonic()
            outcome.timings[step.name] = outcome.failed_at - started
            _observe(on_event, "failed", step.name)
            undo_steps([*(s for s in steps if s.name in outcome.done), step], ctx, outcome, on_event)
            raise DeployFailed(step.name, exc, outcome) from exc
        outcome.timings[step.name] = time.monotonic() - started
        outcome.done.append(step.name)
        on_event("done", step.name)
    return outcome


def undo_steps(steps: list[Step], ctx: Any, outcome: Outcome, on_event: Callable[[str, str], None]) -> None:
    """Undo `steps` in reverse; an undo that fails is recorded and the rest still run."""
    for step in reversed(steps):
        if step.undo is None:
            continue
        _observe(on_event, "undo", step.name)
        for _attempt in range(2):  # a second Ctrl-C during the undo does not stop it
            try:
                step.undo(ctx)
                outcome.undone.append(step.name)
                break
            except KeyboardInterrupt:
                continue
            except Exception as exc:  # keep undoing the rest; report this one
                outcome.undo_failures.append(f"{step.name}: {exc}")
                break


def _observe(on_event: Callable[[str, str], None], event: str, step: str) -> None:
    """Tell the hook (journal, progress) during an undo: if it fails (a full disk, a lost
    host), the undo still runs; the hook's error is only reported."""
    try:
        on_event(event, step)
    except Exception as exc:
        console.warn(f"while undoing {step}: {exc}")
