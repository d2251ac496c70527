"""The hosts' image: a minimal Debian 12 root filesystem built by debootstrap from
Debian's package archive, booted read-only under each host's own layer.

It is cached under the project's `.local/images/`, named by a digest of what goes
into it (the package list and the steps below), so a changed list builds a new
image and every `up` after it uses that one. Nothing but Debian's packages is
downloaded.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .spec import Sandbox
from .system import SandboxError, run, umount_under

SUITE = "bookworm"
MIRROR = os.environ.get("SANDBOX_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a plain Debian server of each role has: sshd, sudo, git and Python with venv
# on every host (the releases are built there), PostgreSQL 15 for the db host,
# HAProxy for the load balancer; pgBackRest for the db and backup hosts; procps for ps.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3", "python3-venv", "git",
            "postgresql-15", "postgresql-client-15", "haproxy", "pgbackrest", "iproute2", "procps")
# Units of a stock install that would wake up at random in every host (package
# updates, trims, scrubs, a weekly pg_dump) and consoles a container has no use for.
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
          "e2scrub_reap.service", "fstrim.timer", "getty@tty1.service", "console-getty.service",
          "systemd-networkd-wait-online.service")
# Enabled only on the host of that role (provision.py).
DISABLED = ("postgresql.service", "haproxy.service")
RECIPE = 1  # bump when the steps in `_customise` change what the image holds
BUILD_TIMEOUT = 900


def key() -> str:
    """What the image holds, as a short digest: a new one means a new image."""
    recipe = json.dumps({"suite": SUITE, "packages": PACKAGES, "masked": MASKED, "disabled": DISABLED,
                         "recipe": RECIPE}, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def path(sandbox: Sandbox) -> Path:
    """The image's root filesystem (it may not be built yet)."""
    return path_in(sandbox.image_dir)


def path_in(image_dir: Path) -> Path:
    return image_dir / f"debian12-{key()}" / "root"


def is_built(sandbox: Sandbox) -> bool:
    return (path(sandbox).parent / "image.json").exists()


def info(sandbox: Sandbox) -> dict | None:
    try:
        return json.loads((path(sandbox).parent / "image.json").read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def _build_lock(sandbox: Sandbox, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    """One build at a time (the demo's `up` and the tests' may start together), and none while
    an `up` mounts hosts on the image (they hold it shared)."""
    sandbox.image_dir.mkdir(parents=True, exist_ok=True)
    with open(sandbox.image_dir / ".lock", "a") as lock:
        fcntl.flock(lock, mode)
        yield


def in_use(sandbox: Sandbox):
    """Held while hosts are mounted on the image: a rebuild waits, then sees them."""
    return _build_lock(sandbox, fcntl.LOCK_SH)


def ensure(sandbox: Sandbox, rebuild: bool = False) -> dict | None:
    """Build the image when it is missing (or `rebuild`); its info when built now, else None."""
    with _build_lock(sandbox):
        if is_built(sandbox) and not rebuild:
            return None
        if _in_use(path(sandbox)):
            raise SandboxError("the image is in use by running sandbox hosts: it cannot be rebuilt under them",
                               hint="inv sandbox.down (and stop the tests), then inv sandbox.image --rebuild")
        built = build_at(sandbox.image_dir)
        _remove_unused(sandbox)
        return built


def build_at(image_dir: Path) -> dict:
    """Build the image under `image_dir` (replacing one there); what was built, and how long it took."""
    final = path_in(image_dir).parent
    staging = image_dir / f".build-{key()}-{os.getpid()}"
    remove_tree(staging)
    started = time.monotonic()
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
             str(staging / "root"), MIRROR], timeout=BUILD_TIMEOUT,
            hint=f"debootstrap needs Debian's package archive ({MIRROR}); set SANDBOX_DEBIAN_MIRROR for another")
        _customise(staging / "root")
        built = {"key": key(), "suite": SUITE, "packages": list(PACKAGES), "mirror": MIRROR,
                 "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "seconds": round(time.monotonic() - started, 1), "bytes": _size(staging / "root")}
        (staging / "image.json").write_text(json.dumps(built, indent=2) + "\n")
        remove_tree(final)
        staging.rename(final)
        return built
    finally:
        remove_tree(staging)


def _customise(root: Path) -> None:
    """What every host shares beyond the packages: no host key (each host gets its own),
    no machine id (each host gets its own: an empty one would make each boot a first
    boot, which enables every unit), no package cache, the noisy units masked."""
    for key_file in (root / "etc" / "ssh").glob("ssh_host_*"):
        key_file.unlink()
    (root / "etc" / "machine-id").write_text("")
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    run(["systemctl", f"--root={root}", "mask", *MASKED])
    run(["systemctl", f"--root={root}", "disable", *DISABLED])


def _size(root: Path) -> int:
    return int(run(["du", "-sxb", str(root)]).stdout.split()[0])


def _in_use(root: Path) -> bool:
    """Whether a host's layer is mounted over `root`."""
    return f"lowerdir={root}," in run(["findmnt", "-rn", "-t", "overlay", "-o", "OPTIONS"], check=False).stdout


def _remove_unused(sandbox: Sandbox) -> None:
    """Older images that no host is booted from."""
    for old in sandbox.image_dir.glob("debian12-*"):
        if old != path(sandbox).parent and not _in_use(old / "root"):
            remove_tree(old)


def remove_tree(folder: Path) -> None:
    """Remove `folder`, unmounting first anything a killed debootstrap left mounted in it."""
    if not folder.exists():
        return
    umount_under(folder)
    shutil.rmtree(folder)


def describe(built: dict) -> str:
    size = f"{built['bytes'] / 2**20:.0f} MB"
    return f"image {built['key']} ({SUITE}, {len(built['packages'])} packages, {size}) built in {built['seconds']}s"
