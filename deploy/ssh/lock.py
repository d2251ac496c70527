"""The stage's lock: a folder made atomically (`mkdir`) on the migrations host, holding
who took it (a unique operation id, user, machine, pid, time, action). Every operation
that changes the stage's code or database holds it.

Whether a holder still runs is known for sure only on its own machine (its pid); from
anywhere else, by its heartbeat: a live holder touches `.lock/heartbeat` every few
seconds, so a lock whose heartbeat is older than STALE_SECONDS belongs to a controller
that died. A lock is only ever removed by its holder, or taken over (explicitly, by
`fab recover` or `fab unlock --force`) from a holder that is dead.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import uuid
from contextlib import contextmanager
from typing import Iterator

from .. import console, interrupts
from ..errors import DeployError
from . import deploylog
from .connection import HostError, Remote
from .layout import Layout

HEARTBEAT_SECONDS = 5
STALE_SECONDS = 30
MANUAL = "manual lock"


class LockHeld(DeployError):
    """Another operation (or a killed one) holds the stage's lock."""


def machine_id() -> str:
    """Where a pid means something: /etc/machine-id (two laptops may share a hostname, not
    this) and the pid namespace (containers may share a machine id, not their pids)."""
    found = f"node-{uuid.getnode():012x}"
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                found = f.read().strip() or found
            break
        except OSError:
            continue
    try:
        return f"{found}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return found


def holder(action: str, ref: str | None) -> dict:
    """Who takes the lock: `id` is unique to this operation; user, host, machine and pid say who."""
    return {"id": uuid.uuid4().hex, "user": getpass.getuser(), "host": socket.gethostname(),
            "machine": machine_id(), "pid": os.getpid(), "time": deploylog.now(), "action": action, "ref": ref}


def describe(info: dict) -> str:
    return (f"{info.get('user', '?')}@{info.get('host', '?')} (pid {info.get('pid', '?')}) since "
            f"{info.get('time', '?')}, {info.get('action', '?')} {info.get('ref') or ''}").rstrip()


def alive(info: dict) -> bool:
    """Whether the holder still runs: its pid on this machine; elsewhere, a fresh heartbeat."""
    if info.get("action") == MANUAL:
        return True  # a person holds it until they unlock
    if not info.get("id") and not info.get("action"):  # unreadable: only a lock being taken this instant is alive
        return info.get("heartbeat_age") is not None and info["heartbeat_age"] <= BEING_MADE_SECONDS
    if info.get("machine") == machine_id() and info.get("host") == socket.gethostname():
        try:  # the same machine and pid namespace: its pid tells at once
            os.kill(int(info.get("pid", 0)), 0)
            return True
        except PermissionError:
            return True
        except (OSError, ValueError):
            return False
    age = info.get("heartbeat_age")
    return age is not None and age <= STALE_SECONDS


def acquire(remote: Remote, layout: Layout, info: dict, stage: str) -> None:
    """Take the lock or raise LockHeld naming its holder (and whether it looks dead)."""
    script = 'mkdir "$1" 2>/dev/null || exit 3; cat > "$1/holder.json" && touch "$1/heartbeat"'  # one mkdir wins
    taken = remote.run(["sh", "-c", script, "lock", layout.lock], input=json.dumps(info), check=False)
    if taken.exited == 0:
        return
    if taken.exited != 3:
        raise HostError(remote.name, f"could not write {layout.lock}/holder.json: {taken.stderr.strip()}",
                        exited=taken.exited)
    raise held_error(read(remote, layout), stage)


def held_error(current: dict | None, stage: str) -> LockHeld:
    who = describe(current) if current else "an unknown holder"
    if current is not None and not alive(current):
        return LockHeld(f"stage {stage} is locked by {who}, which is no longer running",
                        hint=f"fab status --stage {stage}, then fab recover --stage {stage} (it finishes or undoes "
                             "what that operation left, and releases its lock)")
    return LockHeld(f"stage {stage} is locked by {who}",
                    hint=f"wait for it to finish; if it is dead: fab status --stage {stage}, "
                         f"then fab recover --stage {stage}")


READ = ('test -d "$1" || exit 3; cat "$1/holder.json" 2>/dev/null || printf "{}"; printf "\\n"; '
        'echo $(( $(date +%s) - $(stat -c %Y "$1/heartbeat" 2>/dev/null || stat -c %Y "$1") ))')
BEING_MADE_SECONDS = 5  # a lock without a readable holder this young is being taken right now


def read(remote: Remote, layout: Layout) -> dict | None:
    """The holder, None if the lock is free; without a readable holder.json, {} (but for its age).
    `heartbeat_age` is in seconds, on the host's clock (the folder's age before any heartbeat)."""
    out = remote.run(["sh", "-c", READ, "read-lock", layout.lock], check=False)
    if out.exited == 3:
        return None
    text, _, age = out.stdout.rstrip("\n").rpartition("\n")
    try:
        info = json.loads(text)
    except ValueError:
        info = {}
    info = info if isinstance(info, dict) else {}
    info["heartbeat_age"] = int(age) if age.strip().lstrip("-").isdigit() else None
    return info


def take_over(remote: Remote, layout: Layout, dead: dict, info: dict, stage: str) -> None:
    """Replace a dead holder's lock with ours, atomically: only if it is still that holder's
    (checked under flock, so two operators cannot both take it)."""
    script = ('exec 9>"$1.guard" && flock -n 9 || exit 4; { [ -z "$2" ] || grep -qF "$2" "$1/holder.json"; } || exit 5; '
              'mv "$1" "$1.dead-$3" && mkdir "$1" && cat > "$1/holder.json" && touch "$1/heartbeat" '
              '&& rm -rf "$1.dead-$3"')
    done = remote.run(["sh", "-c", script, "take-over", layout.lock, _id_marker(dead), info["id"]],
                      input=json.dumps(info), check=False)
    if done.exited in (4, 5):
        raise LockHeld(f"stage {stage}'s lock changed hands meanwhile: {describe(read(remote, layout) or {})}",
                       hint="look again: fab status --stage " + stage)
    if done.exited != 0:
        raise HostError(remote.name, f"could not take over {layout.lock}: {done.stderr.strip()}", exited=done.exited)


def _id_marker(info: dict) -> str:
    """What identifies `info`'s holder.json; empty for a holder without an id (an older or unreadable lock)."""
    return f'"id": "{info["id"]}"' if info.get("id") else ""


def release(remote: Remote, layout: Layout, info: dict) -> None:
    """Remove the lock if it is still `info`'s; never another operation's."""
    script = 'test -d "$1" || exit 0; { [ -z "$2" ] || grep -qF "$2" "$1/holder.json"; } || exit 5; rm -rf "$1"'
    try:
        done = remote.run(["sh", "-c", script, "unlock", layout.lock, _id_marker(info)], check=False)
    except HostError as exc:
        raise DeployError(f"could not release the lock: {exc}",
                          hint="once the host is back: fab status, then fab recover --stage STAGE") from None
    if done.exited == 5:
        raise DeployError(f"the lock is no longer ours ({describe(read(remote, layout) or {})}): left alone")
    if done.exited != 0:
        raise DeployError(f"could not release the lock on {remote.name}: {done.stderr.strip()}")


class Heartbeat(threading.Thread):
    """Touches the lock's heartbeat while the operation runs, so other controllers see it alive."""

    def __init__(self, remote: Remote, layout: Layout) -> None:
        super().__init__(daemon=True, name="lock-heartbeat")
        self.remote, self.path, self.stopped = remote, f"{layout.lock}/heartbeat", threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                self.remote.run(["touch", "-c", self.path], check=False, timeout=HEARTBEAT_SECONDS * 2)
            except Exception:  # a lost host: the heartbeat goes stale, which is the truth
                continue

    def stop(self) -> None:
        """Stop, and wait for a touch in flight: nothing may use the connection while it closes."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=HEARTBEAT_SECONDS * 3)


@contextmanager
def kept(remote: Remote, layout: Layout, info: dict) -> Iterator[dict]:
    """A lock just taken, kept alive by a heartbeat and released on every exit path."""
    beat = Heartbeat(remote, layout)
    beat.start()
    try:
        yield info
    finally:
        beat.stop()
        with interrupts.deferred(reraise=False):  # a lock left behind would need an operator
            try:
                release(remote, layout, info)
            except DeployError as exc:
                console.warn(str(exc))
