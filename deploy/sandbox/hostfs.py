"""A host's files, written from this machine into its root filesystem (its layer over
the image), owned by the host's own users."""
from __future__ import annotations

import os

from .spec import Host
from .system import SandboxError, write_file


def ids(host: Host, name: str) -> tuple[int, int]:
    """(uid, gid) of the user `name` in the host's own /etc/passwd."""
    for line in (host.rootfs / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise SandboxError(f"{host.name} has no user {name!r}")


def write_as(host: Host, path: str, text: str, mode: int, owner: str = "root") -> bool:
    """Write the host's file `path` (owned by the host's `owner`); True when its text changed."""
    target = host.rootfs / path.lstrip("/")
    changed = not target.exists() or target.read_text() != text
    write_file(target, text, mode)
    os.chown(target, *ids(host, owner))
    return changed
