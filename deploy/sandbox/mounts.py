"""Each host's own filesystem view: a mount namespace (kept alive by a bind mount
under the state folder) in which /srv, /run, /tmp, /home/<user>, /etc/ssh,
/etc/systemd/system and /var/log are the host's own, and the state folder and
the project's checkout are hidden. /srv is a size-limited tmpfs, which is also
how the "disk full" fault works: its size is shrunk to what it holds."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .spec import Host, Sandbox
from .system import in_host, run, script

USED_BYTES = "import os; s = os.statvfs('/srv'); print((s.f_blocks - s.f_bfree) * s.f_frsize, s.f_blocks * s.f_frsize)"


def mount_points() -> set[str]:
    """Mount points of this process's mount namespace."""
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point))
    return points


def ensure_ns_dir(sandbox: Sandbox) -> None:
    """The folder holding the namespace files must be a private mount of its own."""
    sandbox.ns_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if str(sandbox.ns_dir) not in mount_points():
        run(["mount", "--bind", str(sandbox.ns_dir), str(sandbox.ns_dir)])
        run(["mount", "--make-private", str(sandbox.ns_dir)])


def host_dirs(sandbox: Sandbox, host: Host) -> dict[str, Path]:
    """Folders (and files) on this machine that become the host's own paths."""
    dirs = {
        "/etc/ssh": host.root / "etc-ssh",
        f"/home/{sandbox.settings.user}": host.root / "home",
        "/etc/systemd/system": host.root / "systemd",
        "/var/log": host.root / "log",
        "/etc/hosts": host.root / "etc-hosts",
        "/etc/hostname": host.root / "etc-hostname",
        "/usr/bin/systemctl": sandbox.systemctl,
        "/usr/bin/journalctl": sandbox.systemctl.parent / "journalctl",
    }
    if host.is_db:
        dirs["/var/lib/postgresql"] = host.root / "postgresql"
    return dirs


def _setup_commands(sandbox: Sandbox, host: Host) -> list[list[str]]:
    tag = sandbox.prefix
    commands = [
        # Copies of other namespaces' bind mounts would keep those namespaces alive.
        ["umount", "--lazy", str(sandbox.ns_dir)],
        ["sh", "-c", "! mountpoint -q /run/netns || umount --lazy /run/netns"],
    ]
    # Bind first: the sources may be under /tmp or /run, which are replaced next.
    for target, source in host_dirs(sandbox, host).items():
        commands.append(["mount", "--bind", str(source), target])
    commands += [
        ["mount", "-t", "tmpfs", "-o", f"size={sandbox.settings.disk_size},mode=0755", f"{tag}-srv", "/srv"],
        ["mount", "-t", "tmpfs", "-o", "mode=0755", f"{tag}-run", "/run"],
        ["mkdir", "-m", "0755", "/run/sshd"],
        ["mount", "-t", "tmpfs", "-o", "mode=1777", f"{tag}-tmp", "/tmp"],
        ["mount", "-t", "tmpfs", "-o", "mode=1777", f"{tag}-tmp", "/var/tmp"],
    ]
    if host.is_db:
        commands += [["mkdir", "-m", "2775", "/run/postgresql"], ["chown", "postgres:postgres", "/run/postgresql"]]
    commands.append(["hostname", host.name])
    for hidden in _outermost([sandbox.state_dir, sandbox.project_root]):
        commands.append(["sh", "-c", 'if [ -d "$1" ]; then mount -t tmpfs -o size=64k,mode=0700 "$2" "$1"; fi',
                         "hide", hidden, f"{tag}-hidden"])
    return commands


def _outermost(paths: list[Path]) -> list[str]:
    """The paths not inside another of them (hiding the outer one hides both)."""
    return sorted({str(p) for p in paths if not any(o != p and o in p.parents for o in paths)})


def has_namespace(host: Host) -> bool:
    return str(host.mount_ns) in mount_points()


def ensure_host_mounts(sandbox: Sandbox, host: Host) -> bool:
    """Create the host's mount and hostname namespaces; False when they exist."""
    if has_namespace(host):
        return False
    for path in (host.mount_ns, host.uts_ns):
        path.touch(mode=0o600)
    run(["unshare", f"--mount={host.mount_ns}", f"--uts={host.uts_ns}", "--propagation", "private",
         *script(_setup_commands(sandbox, host))])
    return True


def remove_host_mounts(host: Host) -> None:
    """Release the namespaces (they end once no process uses them)."""
    points = mount_points()
    for path in (host.mount_ns, host.uts_ns):
        if str(path) in points:
            run(["umount", str(path)])
        path.unlink(missing_ok=True)


def remove_ns_dir(sandbox: Sandbox) -> None:
    if str(sandbox.ns_dir) in mount_points():
        run(["umount", "--lazy", str(sandbox.ns_dir)])


def disk_usage(host: Host) -> tuple[int, int]:
    """(used, size) of the host's /srv in bytes."""
    used, size = in_host(host, ["python3", "-c", USED_BYTES]).stdout.split()
    return int(used), int(size)


def fill_disk(host: Host) -> None:
    """Shrink /srv to what it holds: the next write that needs a block fails with ENOSPC."""
    used, _ = disk_usage(host)
    page = os.sysconf("SC_PAGE_SIZE")
    in_host(host, ["mount", "-o", f"remount,size={max(used, page)}", "/srv"])


def free_disk(sandbox: Sandbox, host: Host) -> None:
    in_host(host, ["mount", "-o", f"remount,size={sandbox.settings.disk_size}", "/srv"])


def _ours(sandbox: Sandbox, point: str) -> bool:
    """Under the state folder, or a namespace file of this prefix (a sandbox whose state was lost)."""
    state = str(sandbox.state_dir)
    stray = re.search(rf"/ns/{re.escape(sandbox.prefix)}-[a-z0-9]+\.(mnt|uts)$", point)
    return point == state or point.startswith(state + "/") or stray is not None


def remove_strays(sandbox: Sandbox) -> None:
    """Unmount what a sandbox of this prefix left behind (state folder lost, setup killed)."""
    for point in sorted(mount_points(), reverse=True):
        if _ours(sandbox, point):
            run(["umount", "--lazy", point])


def leftovers(sandbox: Sandbox) -> list[str]:
    """Mounts of the sandbox that still exist on this machine."""
    return sorted(f"mount {p}" for p in mount_points() if _ours(sandbox, p))
