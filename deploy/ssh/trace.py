"""An optional record of every remote command: with FLASK_DEPLOY_TRACE=FILE set, each
command and upload appends one JSON line (host, start, seconds, exit, the command's
first 200 characters). For seeing where a deploy's time goes; the benchmarks count
SSH commands per host with it. Commands never carry secrets, so neither does this."""
from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

VARIABLE = "FLASK_DEPLOY_TRACE"
_lock = threading.Lock()


@contextmanager
def traced(host: str, command: str) -> Iterator[dict]:
    """Time the block; when tracing, append its line (the block may set `exited`)."""
    path = os.environ.get(VARIABLE)
    record: dict = {"host": host, "start": time.time(), "command": command[:200], "exited": None}
    started = time.monotonic()
    try:
        yield record
    finally:
        if path:
            record["seconds"] = round(time.monotonic() - started, 4)
            with _lock, open(path, "a") as out:
                out.write(json.dumps(record) + "\n")


def read(path: str) -> list[dict]:
    """The records of a trace file, oldest first."""
    with open(path) as lines:
        return [json.loads(line) for line in lines if line.strip()]
