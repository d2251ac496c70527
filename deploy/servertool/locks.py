"""Locks between the tool's runs on one backup host (fab's, and the timers'): flock on files
in the backups folder, released by the kernel when a run ends, however it ends.

- `backups`: whoever reads a backup (a restore, a verification, the check) holds it shared;
  retention holds it exclusively and never waits: with a backup in use, it skips this time.
- `restore-test`: one restore test at a time, so one never drops another's scratch database.

An operation that reads a backup over several runs (`fab restore`: verify, safety backup,
restore) pins it instead: a file in backups/.pins/ that retention respects for PIN_HOURS
(a pin left by a killed controller then lapses rather than keep the backup forever).
"""
from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager
from typing import Iterator

from pgenv import ToolError


class Busy(ToolError):
    """The lock is held by another run and this one does not wait."""


@contextmanager
def held(folder: str, name: str, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(folder, f".{name}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise ToolError(f"cannot open the lock {folder}/.{name}.lock: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(f"{name} is in use by another run") from None
        yield
    finally:
        os.close(fd)


PIN_HOURS = 48
PIN_OWNER = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _pins(folder: str) -> str:
    return os.path.join(folder, ".pins")


def pin(folder: str, backup_id: str, owner: str) -> dict:
    if not PIN_OWNER.fullmatch(owner) or "/" in backup_id:
        raise ToolError("a pin needs a backup id and an owner id")
    os.makedirs(_pins(folder), mode=0o700, exist_ok=True)
    with held(folder, "backups"):  # not while retention is deciding
        if not os.path.exists(os.path.join(folder, f"{backup_id}.json")):
            raise ToolError(f"there is no backup {backup_id}")
        open(os.path.join(_pins(folder), f"{backup_id}.{owner}"), "w").close()
    return {"pinned": backup_id}


def unpin(folder: str, backup_id: str, owner: str) -> dict:
    try:
        os.unlink(os.path.join(_pins(folder), f"{backup_id}.{owner}"))
    except FileNotFoundError:
        pass
    return {"unpinned": backup_id}


def pinned(folder: str, now: float | None = None) -> set[str]:
    """Backups an operation is reading (pins younger than PIN_HOURS)."""
    now = time.time() if now is None else now
    found = set()
    try:
        names = os.listdir(_pins(folder))
    except FileNotFoundError:
        return found
    for name in names:
        try:
            if now - os.path.getmtime(os.path.join(_pins(folder), name)) < PIN_HOURS * 3600:
                found.add(name.rsplit(".", 1)[0])
        except OSError:
            continue
    return found
