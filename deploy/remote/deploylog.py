"""The stage's deploy log on the migrations host: one JSON line per deploy, rollback or recovery."""
from __future__ import annotations

import json

from .connection import Remote
from .layout import Layout


def append(remote: Remote, layout: Layout, entry: dict) -> None:
    remote.run(["sh", "-c", 'cat >> "$1"', "log", layout.log], input=json.dumps(entry) + "\n")
