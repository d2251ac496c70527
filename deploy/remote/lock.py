"""The stage's deploy lock: a folder made atomically (`mkdir`) on the migrations
host, holding who took it, when, from where and for which ref. A second deploy
is refused and told the holder; `fab unlock --force` is the explicit way out."""
from __future__ import annotations

import getpass
import json
import os
import socket

from ..errors import DeployError
from . import deploylog
from .connection import HostError, Remote
from .layout import Layout


class LockHeld(DeployError):
    """Another deploy (or a killed one) holds the stage's lock."""


def holder(action: str, ref: str | None) -> dict:
    return {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
            "time": deploylog.now(), "action": action, "ref": ref}


def describe(info: dict) -> str:
    return (f"{info.get('user', '?')}@{info.get('host', '?')} (pid {info.get('pid', '?')}) since "
            f"{info.get('time', '?')}, {info.get('action', '?')} {info.get('ref') or ''}").rstrip()


def acquire(remote: Remote, layout: Layout, info: dict, stage: str) -> None:
    """Take the lock or raise LockHeld naming its holder."""
    script = 'mkdir "$1" 2>/dev/null || exit 3; cat > "$1/holder.json"'  # atomic: one mkdir wins
    taken = remote.run(["sh", "-c", script, "lock", layout.lock], input=json.dumps(info), check=False)
    if taken.exited != 3:
        if taken.exited != 0:
            raise HostError(remote.name, f"could not write {layout.lock}/holder.json: {taken.stderr.strip()}",
                            exited=taken.exited)
        return
    current = read(remote, layout)
    raise LockHeld(f"stage {stage} is locked by {describe(current) if current else 'an unknown holder'}",
                   hint=f"wait for it to finish; if it is dead: fab status --stage {stage}, "
                        f"then fab unlock --stage {stage} --force")


def read(remote: Remote, layout: Layout) -> dict | None:
    out = remote.run(["cat", f"{layout.lock}/holder.json"], check=False)
    if out.exited != 0:
        exists = remote.run(["test", "-d", layout.lock], check=False).exited == 0
        return {} if exists else None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {}


def release(remote: Remote, layout: Layout) -> None:
    try:
        remote.run(["rm", "-rf", layout.lock])
    except HostError as exc:
        raise DeployError(f"could not release the deploy lock: {exc}",
                          hint="fab unlock --stage STAGE --force once the host is back") from None
