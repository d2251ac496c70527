"""A host's files, written from this machine into its root filesystem (its layer over
the image), owned by the host's own users."""
from __future__ import annotations

import os
from pathlib import Path

from .spec import Host
from .system import SandboxError, write_file


def entries(host: Host, table: str) -> dict[str, list[str]]:
    """The host's own /etc/passwd or /etc/group: each name and its fields."""
    rows = (line.split(":") for line in (host.rootfs / "etc" / table).read_text(errors="replace").splitlines())
    return {fields[0]: fields for fields in rows if len(fields) > 3}


def ids(host: Host, name: str) -> tuple[int, int]:
    """(uid, gid) of the user `name` in the host's own /etc/passwd."""
    fields = entries(host, "passwd").get(name)
    if fields is None:
        raise SandboxError(f"{host.name} has no user {name!r}")
    return int(fields[2]), int(fields[3])


def write_as(host: Host, path: str, text: str, mode: int, owner: str = "root") -> bool:
    """Write the host's file `path` (owned by the host's `owner`); True when its text changed.
    A link in the host's layer that leads out of it is refused, never followed."""
    target = inside(host, path)
    changed = not target.exists() or target.read_text() != text
    write_file(target, text, mode)
    os.chown(target, *ids(host, owner))
    return changed


def inside(host: Host, path: str) -> Path:
    """This machine's path of the host's `path`, refusing one a symbolic link leads out of the host."""
    target = host.rootfs / path.lstrip("/")
    resolved = target.resolve()
    if resolved != host.rootfs.resolve() and host.rootfs.resolve() not in resolved.parents:
        raise SandboxError(f"{host.name}: {path} leads out of the host ({resolved}): not written")
    return target
