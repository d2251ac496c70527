"""The load balancer host: Debian's HAProxy under systemd, in front of the app
hosts on the sandbox's own address, with active health checks, and its runtime
API on a socket that the deploy user may use (group haproxy)."""
from __future__ import annotations

import time

from ..ssh import balancer
from ..stages import MAINTENANCE_MAP
from .hostfs import inside, write_as
from .system import SandboxError, in_host
from .spec import LB_PORT, Host, Sandbox

UNIT = "haproxy.service"
GROUP = "haproxy"   # may use the runtime API socket (mode 660)
CONFIG = "/etc/haproxy/haproxy.cfg"
SOCKET = "/run/haproxy/admin.sock"
BACKEND = "app"
APP_PORT = 8000
# The load balancer asks each app host [project] live_path: does the process serve, and does
# its database answer? Never "is this release at this revision": that would take a healthy old
# release out of rotation while the database is ahead of it (docs/load-balancer.md).

HAPROXY_CFG = """\
# Written by the sandbox; `inv sandbox.up` rewrites it.
global
    log /dev/log local0
    chroot /var/lib/haproxy
    stats socket {socket} mode 660 level admin
    stats timeout 30s
    user haproxy
    group haproxy

defaults
    log global
    mode http
    option httplog
    option dontlognull
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A request that could not reach its server goes to another one.
    option redispatch
    retries 3

frontend users
    bind {address}:{port}
    # fab maintenance.on puts a page into this map through the runtime API; while it is
    # there, the load balancer answers every request with it (docs/load-balancer.md).
    http-request return status 503 content-type "text/html; charset=utf-8" lf-string "%[str(page),map({maintenance_map}),b64dec]" hdr Retry-After "%[str(retry_after),map({maintenance_map})]" if {{ str(page),map({maintenance_map}) -m found }}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET {check}
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2
{servers}
"""


def config_text(sandbox: Sandbox, lb: Host) -> str:
    servers = "\n".join(f"    server {h.name} {h.address}:{APP_PORT} check" for h in sandbox.apps)
    return HAPROXY_CFG.format(socket=SOCKET, address=lb.address, port=LB_PORT, backend=BACKEND,
                              check=sandbox.settings.live_path, servers=servers, maintenance_map=MAINTENANCE_MAP)


def write_config(sandbox: Sandbox, lb: Host) -> bool:
    """haproxy.cfg for the sandbox's app hosts (and its maintenance map); True when it changed."""
    if not inside(lb, MAINTENANCE_MAP).exists():
        write_as(lb, MAINTENANCE_MAP, "", 0o644)
    return write_as(lb, CONFIG, config_text(sandbox, lb), 0o644)


def ask(lb: Host, command: str) -> str:
    """One runtime API command's answer (`show stat`, `set server app/app1 state drain`)."""
    return in_host(lb, ["python3", "-c", balancer.ASK, SOCKET, command]).stdout


def servers(lb: Host) -> dict[str, dict[str, str]]:
    """The backend's servers as HAProxy reports them (status, chkdown, scur...)."""
    return balancer.parse_stat(ask(lb, "show stat"), BACKEND)


def wait_in_rotation(lb: Host, timeout: float = 30) -> dict[str, dict[str, str]]:
    """Until every app host is UP at the load balancer (its health checks passed); the servers."""
    deadline = time.monotonic() + timeout
    while True:
        found = servers(lb)
        if found and all(s["status"] == "UP" for s in found.values()):
            return found
        if time.monotonic() > deadline:
            states = ", ".join(f"{name} {s['status']}" for name, s in found.items())
            raise SandboxError(f"not every app host is in rotation after {timeout:.0f}s: {states}")
        time.sleep(0.2)


def ready_all(sandbox: Sandbox, lb: Host) -> None:
    """Every app host back in rotation as far as the runtime API goes (a test may have drained one)."""
    for host in sandbox.apps:
        ask(lb, f"set server {BACKEND}/{host.name} state ready")
