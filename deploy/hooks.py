"""Local commands run around a deploy's steps (`[stages.S.hooks]`), as Kamal's hooks:
`before_deploy`, `after_deploy`, `on_failure`, and `before_STEP` / `after_STEP` for each step
(preflight, build, backup, migrate, compat, switch, finish).

A command is a list of arguments, or a string split as a shell would split it; it is run
without a shell, in the project's folder, with FLASK_DEPLOY_* variables describing the
deploy. A failing `before_` hook fails its step: the deploy stops and undoes what it did.
A failing `after_` or `on_failure` hook is reported; the deploy's outcome stands.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import console
from .config import _Table
from .errors import DeployError
from .pipeline import Step

STEP_NAMES = ("preflight", "build", "backup", "migrate", "compat", "switch", "finish")
NAMES = ("before_deploy", "after_deploy", "on_failure", *(f"{when}_{step}" for step in STEP_NAMES
                                                          for when in ("before", "after")))


class HookFailed(DeployError):
    """A `before_` hook failed: the step it guards does not run."""


@dataclass(frozen=True)
class HookSettings:
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    timeout: float = 300.0


def settings(table: _Table) -> HookSettings:
    commands = {}
    for key, value in table.data.items():
        if key == "timeout":
            continue
        if key not in NAMES:
            raise table.fail(key, f"a hook among {', '.join(NAMES)} (or timeout)")
        if isinstance(value, str) and value.strip():
            try:
                argv = tuple(shlex.split(value))
            except ValueError as exc:
                raise table.fail(key, f"a command line that splits into words ({exc})") from None
        elif isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            argv = tuple(value)
        else:
            raise table.fail(key, "a command: a string, or a list of its arguments")
        commands[key] = argv
    return HookSettings(commands, table.number("timeout", 300, 1, 86400))


def run(hooks: HookSettings, name: str, facts: dict, root: Path, raising: bool = False) -> bool:
    """Run the hook `name` if the stage has one; True if none or it succeeded. A failure raises
    HookFailed when `raising`, else is reported."""
    argv = hooks.commands.get(name)
    if not argv:
        return True
    env = dict(os.environ, FLASK_DEPLOY_HOOK=name,
               **{f"FLASK_DEPLOY_{k.upper()}": _text(v) for k, v in facts.items() if v is not None})
    console.say(f"  hook {name}: {shlex.join(argv)}")
    problem, shown = _run_command(argv, root, env, hooks.timeout)
    for line in shown:
        console.say(f"    {line}")
    if problem is None:
        return True
    if raising:
        raise HookFailed(f"the {name} hook {problem}", hint=f"fix or remove [stages.<stage>.hooks] {name}, "
                                                            "then deploy again")
    console.warn(f"the {name} hook {problem}; the outcome stands")
    return False


def _run_command(argv: tuple[str, ...], root: Path, env: dict, timeout: float) -> tuple[str | None, list[str]]:
    """(what went wrong or None, its last lines of output). Its output goes to a file, so a child
    it leaves running cannot hold the hook open; its whole process group is stopped at the timeout."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(list(argv), cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return f"could not start: {exc.strerror}", []
        try:
            code = proc.wait(timeout=timeout)
            problem = None if code == 0 else f"exited with {code}"
        except subprocess.TimeoutExpired:
            _stop(proc)
            problem = f"did not finish within {timeout:g}s (it was stopped)"
        except BaseException:  # Ctrl-C: the hook stops with us
            _stop(proc)
            raise
        out.seek(0)
        return problem, out.read().decode("utf-8", errors="replace").strip().splitlines()[-20:]


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def around(steps: list[Step], hooks: HookSettings, facts, root: Path) -> list[Step]:
    """`steps` with their before_/after_ hooks; `facts()` describes the deploy at that moment."""
    if not hooks.commands:
        return steps
    wrapped = []
    for step in steps:
        before, after = f"before_{step.name}", f"after_{step.name}"
        if before not in hooks.commands and after not in hooks.commands:
            wrapped.append(step)
            continue

        def do(d, step=step, before=before, after=after) -> None:
            run(hooks, before, facts(), root, raising=True)
            step.do(d)
            run(hooks, after, facts(), root)
        wrapped.append(Step(step.name, do, step.undo))
    return wrapped
