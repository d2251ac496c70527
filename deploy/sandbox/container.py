"""Each host as a machine of its own: a container booted with systemd as PID 1
(systemd-nspawn), its root an overlay of its own writable layer on the shared
read-only image, its network namespace from network.py, and its /srv a
size-limited tmpfs on this machine (the disk-full fault shrinks it).

A small supervisor loop starts the container again when systemd inside asks for
a reboot (systemd-nspawn exits with 133 then), as a machine's firmware would.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable

from .spec import Host, Sandbox
from .system import SandboxError, in_host, leader, mount_points, run

# Moves itself into the host's own cgroups (containers that shared one would clash over
# its init.scope), then runs the container until it powers off or dies, and again after
# each reboot (systemd-nspawn exits with 133 when the container rebooted).
SUPERVISOR = """echo $$ > "$1"
IFS=:; for group in $2; do mkdir -p "$group" && echo $$ > "$group/cgroup.procs"; done; unset IFS
shift 2
while :; do "$@"; rc=$?; [ "$rc" -eq 133 ] || exit "$rc"; done"""
CGROUPS = Path("/sys/fs/cgroup")
BOOT_TIMEOUT = 60.0


def ensure_layers(sandbox: Sandbox, image_root: Path, host: Host) -> list[str]:
    """The host's root (its layer over the image) and its /srv, mounted here; returns what it made."""
    made = []
    points = mount_points()
    if str(host.rootfs) not in points:
        for folder in (host.upper, host.work, host.rootfs):
            folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", f"{sandbox.prefix}-{host.name}",
             "-o", f"lowerdir={image_root},upperdir={host.upper},workdir={host.work}", str(host.rootfs)])
        machine_id = host.rootfs / "etc" / "machine-id"
        if not machine_id.read_text().strip():  # the host's own, so that no boot is a first boot
            machine_id.write_text(uuid.uuid4().hex + "\n")
        made.append("root filesystem")
    if str(host.srv) not in points:
        host.srv.mkdir(mode=0o755, parents=True, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", f"size={sandbox.settings.disk_size},mode=0755",
             f"{sandbox.prefix}-srv", str(host.srv)])
        made.append("/srv")
    return made


def boot_command(host: Host) -> list[str]:
    return [
        "systemd-nspawn", "--quiet", "--boot", f"--directory={host.rootfs}", f"--machine={host.machine}",
        f"--hostname={host.name}", "--register=no", "--keep-unit", "--console=passive",
        f"--network-namespace-path=/run/netns/{host.netns}", f"--bind={host.srv}:/srv",
        "--link-journal=no", "--resolv-conf=off", "--timezone=off",
    ]


def supervisor(host: Host) -> int | None:
    """The host's supervisor loop, from its pid file; None when it is not running."""
    try:
        pid = int(host.supervisor_pid.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if f"--machine={host.machine}".encode() in argv else None


def start(host: Host) -> bool:
    """Boot the host unless it runs; False when it was running."""
    if supervisor(host) is not None:
        return False
    with open(host.console_log, "ab") as console:
        groups = ":".join(str(g) for g in cgroups(host))
        subprocess.Popen(["sh", "-c", SUPERVISOR, "supervise", str(host.supervisor_pid), groups, *boot_command(host)],
                         stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True,
                         cwd="/")
    return True


def cgroups(host: Host) -> list[Path]:
    """The host's own cgroup in each hierarchy systemd uses: the unified one (cgroup v2),
    and on a hybrid machine also the named "systemd" one (v1)."""
    if (CGROUPS / "cgroup.procs").exists():  # cgroup v2 only
        return [CGROUPS / f"sandbox-{host.machine}"]
    return [CGROUPS / h / f"sandbox-{host.machine}" for h in ("systemd", "unified") if (CGROUPS / h).is_dir()]


def remove_cgroups(host: Host) -> None:
    """The host's cgroups, innermost first (each must be empty of processes)."""
    for group in cgroups(host):
        if group.is_dir():
            for folder in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                folder.rmdir()
            group.rmdir()


def wait_booted(host: Host, timeout: float = BOOT_TIMEOUT) -> str:
    """Until systemd in the host has finished booting; its state then ("running", or
    "degraded" when a unit failed: `up` starts what the host needs and says so)."""
    deadline = time.monotonic() + timeout
    while True:
        if leader(host) is not None:
            state = in_host(host, ["systemctl", "is-system-running", "--wait"], check=False,
                            timeout=timeout).stdout.strip()
            if state in ("running", "degraded"):
                return state
        if time.monotonic() > deadline:
            tail = host.console_log.read_text(errors="replace")[-2000:] if host.console_log.exists() else ""
            raise SandboxError(f"{host.name} did not boot within {timeout:.0f}s\n{tail}")
        time.sleep(0.05)


def reboot(host: Host) -> float:
    """Reboot the host as `systemctl reboot` does; seconds until it has booted again."""
    before = leader(host)
    started = time.monotonic()
    in_host(host, ["systemctl", "reboot"], check=False)
    while leader(host) in (before, None) and time.monotonic() - started < BOOT_TIMEOUT:
        time.sleep(0.05)
    wait_booted(host)
    return time.monotonic() - started


def stop(host: Host) -> None:
    """Power the host off at once: the supervisor first (no restart), then PID 1 and so every
    process inside; returns once systemd-nspawn has gone."""
    loop = supervisor(host)
    if loop is not None:
        os.kill(loop, signal.SIGKILL)
    init = leader(host)
    if init is not None:
        os.kill(init, signal.SIGKILL)
    for pid in nspawn_pids(lambda name: name == host.machine):
        if init is None:  # still starting: no PID 1 to end yet
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
    host.supervisor_pid.unlink(missing_ok=True)


def nspawn_pids(wanted: Callable[[str], bool]) -> list[int]:
    """systemd-nspawn processes on this machine whose machine name is `wanted`."""
    return _processes(wanted, lambda argv: argv[0].endswith("systemd-nspawn"))


def supervisors(wanted: Callable[[str], bool]) -> list[int]:
    """Supervisor loops on this machine whose container's machine name is `wanted`."""
    return _processes(wanted, lambda argv: argv[3:4] == ["supervise"])


def _processes(wanted: Callable[[str], bool], kind: Callable[[list[str]], bool]) -> list[int]:
    """Processes of `kind` whose command line names a machine (`--machine=NAME`) that is `wanted`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        names = [a.removeprefix("--machine=") for a in argv if a.startswith("--machine=")]
        if names and kind(argv) and wanted(names[0]):
            found.append(int(proc.name))
    return found


def leftovers(sandbox: Sandbox) -> list[str]:
    """Containers and mounts of the sandbox still on this machine."""
    mine = lambda name: name.startswith(f"{sandbox.prefix}-")  # noqa: E731
    state = str(sandbox.state_dir)
    return ([f"container {pid}" for pid in nspawn_pids(mine)]
            + [f"supervisor {pid}" for pid in supervisors(mine)]
            + [f"mount {p}" for p in mount_points() if p == state or p.startswith(state + "/")]
            + [f"cgroup {g}" for g in CGROUPS.glob(f"*/sandbox-{sandbox.prefix}-*")]
            + [f"cgroup {g}" for g in CGROUPS.glob(f"sandbox-{sandbox.prefix}-*")])


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise SandboxError(f"systemd-nspawn (pid {pid}) did not exit")
        time.sleep(0.02)


def remove_layers(host: Host) -> None:
    """Unmount the host's root and /srv (its processes must be gone)."""
    points = mount_points()
    for point in (host.srv, host.rootfs):
        if str(point) in points:
            run(["umount", str(point)])


def disk_usage(host: Host) -> tuple[int, int]:
    """(used, size) of the host's /srv in bytes."""
    s = os.statvfs(host.srv)
    return (s.f_blocks - s.f_bfree) * s.f_frsize, s.f_blocks * s.f_frsize


def fill_disk(host: Host) -> None:
    """Shrink /srv to what it holds: the next write that needs a block fails with ENOSPC."""
    used, _ = disk_usage(host)
    run(["mount", "-o", f"remount,size={max(used, os.sysconf('SC_PAGE_SIZE'))}", str(host.srv)])


def free_disk(sandbox: Sandbox, host: Host) -> None:
    run(["mount", "-o", f"remount,size={sandbox.settings.disk_size}", str(host.srv)])


def is_running(host: Host) -> bool:
    return leader(host) is not None
