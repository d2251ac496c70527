"""The glue between Invoke/Fabric tasks and the toolkit: errors become messages.

Wrapping a task body here is the one place where a DeployError turns into a
short message and a non-zero exit (Invoke's `Exit`), so no expected failure
prints a traceback.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from invoke import Exit
from invoke import task as invoke_task

from .errors import DeployError


def reporting_errors(body: Callable[..., Any]) -> Callable[..., Any]:
    """Run `body`; turn a DeployError into Invoke's Exit with its message."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except DeployError as exc:
            raise Exit(f"error: {exc}", code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper


def task(*args: Any, **kwargs: Any) -> Any:
    """`invoke.task`, with DeployError reported as a message."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return invoke_task(reporting_errors(args[0]))

    def decorate(body: Callable[..., Any]) -> Any:
        return invoke_task(*args, **kwargs)(reporting_errors(body))

    return decorate
