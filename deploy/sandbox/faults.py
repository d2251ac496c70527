"""Fault switches: real outages for the tests, and for anyone who wants to watch a
rollback. Each one is undone by its opposite (a reboot by itself), and all of them by `reset`."""
from __future__ import annotations

from typing import Callable

from . import container, dbhost, network
from .spec import Host, Sandbox
from .system import SandboxError


def cut_network(sandbox: Sandbox, host: Host) -> str:
    network.set_link(host, up=False)
    return f"{host.name}'s link is down: its packets are dropped (open SSH sessions hang, then break)"


def restore_network(sandbox: Sandbox, host: Host) -> str:
    network.set_link(host, up=True)
    return f"{host.name}'s link is up"


def fill_disk(sandbox: Sandbox, host: Host) -> str:
    container.fill_disk(host)
    return f"{host.name}'s /srv is full: writes there fail with ENOSPC"


def free_disk(sandbox: Sandbox, host: Host) -> str:
    container.free_disk(sandbox, host)
    return f"{host.name}'s /srv is back to {sandbox.settings.disk_size}"


def stop_database(sandbox: Sandbox, host: Host) -> str:
    _require_db(host)
    stopped = dbhost.stop(host)
    return f"PostgreSQL stopped (systemctl stop {dbhost.UNIT})" if stopped else "PostgreSQL was not running"


def start_database(sandbox: Sandbox, host: Host) -> str:
    _require_db(host)
    started = dbhost.start(host)
    return "PostgreSQL started" if started else "PostgreSQL was running"


def reboot(sandbox: Sandbox, host: Host) -> str:
    seconds = container.reboot(host)
    return f"{host.name} rebooted (systemctl reboot) and finished booting in {seconds:.1f}s"


def _require_db(host: Host) -> None:
    if not host.is_db:
        raise SandboxError(f"{host.name} has no database", hint="use the db host: inv sandbox.fault db stop-db")


FAULTS: dict[str, Callable[[Sandbox, Host], str]] = {
    "cut-network": cut_network,
    "restore-network": restore_network,
    "fill-disk": fill_disk,
    "free-disk": free_disk,
    "stop-db": stop_database,
    "start-db": start_database,
    "reboot": reboot,
}


def apply(sandbox: Sandbox, host_name: str, action: str) -> str:
    """Look up the host and the fault by name, with the choices in the error."""
    host = sandbox.find(host_name)
    if host is None:
        names = ", ".join(h.name for h in sandbox.hosts)
        raise SandboxError(f"no host {host_name!r} in the sandbox (hosts: {names})")
    if action not in FAULTS:
        raise SandboxError(f"unknown fault {action!r}; choose one of: {', '.join(FAULTS)}")
    return FAULTS[action](sandbox, host)
