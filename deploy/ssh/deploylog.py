"""The stage's deploy log on the migrations host: one JSON line per deploy, rollback or recovery."""
from __future__ import annotations

import json
import time

from .. import console
from ..errors import DeployError
from .connection import Remote
from .layout import Layout


def now() -> str:
    """UTC, ISO 8601: the time in every log line, manifest and lock holder."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def stamp() -> str:
    """UTC, sortable: the start of every release and backup id."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


def append(remote: Remote, layout: Layout, entry: dict) -> None:
    remote.run(["sh", "-c", 'cat >> "$1"', "log", layout.log], input=json.dumps(entry) + "\n")


def append_or_warn(remote: Remote, layout: Layout, entry: dict) -> None:
    """For a log line after the fact: a failure to write it is said, never raised."""
    try:
        append(remote, layout, entry)
    except DeployError as exc:
        console.warn(f"could not write the deploy log: {exc}")
