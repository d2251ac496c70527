"""The stage's load balancer (HAProxy), driven through its runtime API on the LB host,
over SSH as the deploy user: take an app host out of rotation gently (drain: no new
requests, the open ones finish), and put it back once it is healthy.

The deploy user needs access to the API socket: on Debian, membership of the
`haproxy` group (the socket is `mode 660 level admin`).
"""
from __future__ import annotations

import time

from ..errors import DeployError
from ..stages import LoadBalancer
from .connection import Remote

# One command to the socket, its answer printed (python3 is on the LB host, as on every host).
ASK = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
       "s.sendall(sys.argv[2].encode() + b'\\n'); "
       "print(b''.join(iter(lambda: s.recv(65536), b'')).decode(), end='')")
IN_ROTATION = ("UP",)


class BalancerError(DeployError):
    """The load balancer could not be asked, or did not do what it was asked."""


def ask(remote: Remote, lb: LoadBalancer, command: str) -> str:
    out = remote.run(["python3", "-c", ASK, lb.socket, command], check=False)
    if out.exited != 0:
        last = (out.stderr.strip().splitlines() or [f"exit {out.exited}"])[-1]
        hint = (f"let the deploy user use {lb.socket} on {remote.name} (Debian: adduser USER haproxy)"
                if "Permission denied" in last else f"is HAProxy running on {remote.name} with that stats socket?")
        raise BalancerError(f"{remote.name}: HAProxy's runtime API at {lb.socket} did not answer: {last}", hint=hint)
    answer = out.stdout.strip()
    if answer and not command.startswith("show"):
        raise BalancerError(f"{remote.name}: HAProxy refused {command!r}: {answer}")
    return out.stdout


def servers(remote: Remote, lb: LoadBalancer) -> dict[str, dict[str, str]]:
    return parse_stat(ask(remote, lb, "show stat"), lb.backend)


def parse_stat(text: str, backend: str) -> dict[str, dict[str, str]]:
    """The backend's servers from `show stat` (CSV): status UP/DOWN/DRAIN/MAINT, scur (open
    sessions), chkdown (times its health check took it out), and HAProxy's other columns."""
    lines = text.splitlines()
    if not lines:
        return {}
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    return {r["svname"]: r for r in rows
            if r.get("pxname") == backend and r.get("svname") not in ("FRONTEND", "BACKEND")}


def check_servers(remote: Remote, lb: LoadBalancer, hosts: list[str]) -> str:
    """Preflight: every app host is a server of the backend. A one-line summary."""
    known = servers(remote, lb)
    missing = [f"{h} (as {lb.server(h)!r})" for h in hosts if lb.server(h) not in known]
    if missing:
        raise BalancerError(f"{remote.name}: HAProxy's backend {lb.backend!r} has no server for "
                            f"{', '.join(missing)}; it has: {', '.join(known) or 'none'}",
                            hint="name each app host's server in [stages.NAME.lb] servers, or fix backend")
    return ", ".join(f"{h} {known[lb.server(h)]['status']}" for h in hosts)


def drain(remote: Remote, lb: LoadBalancer, host: str) -> None:
    """No new requests to `host`; returns once its open ones have finished (or drain_timeout)."""
    name = lb.server(host)
    ask(remote, lb, f"set server {lb.backend}/{name} state drain")
    deadline = time.monotonic() + lb.drain_timeout
    while time.monotonic() < deadline:
        if servers(remote, lb)[name]["scur"] in ("0", ""):
            return
        time.sleep(0.1)


def put_back(remote: Remote, lb: LoadBalancer, host: str, timeout: float) -> None:
    """Back in rotation, once HAProxy's own health check says it is up."""
    name = lb.server(host)
    ask(remote, lb, f"set server {lb.backend}/{name} state ready")
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        status = servers(remote, lb)[name]["status"]
        if status in IN_ROTATION:
            return
        time.sleep(0.2)
    raise BalancerError(f"{host} is back in HAProxy's rotation but its check says {status} after {timeout:.0f}s",
                        hint=f"look at HAProxy's check of {name} (show stat) and the app's /livez")


def undrain_all(remote: Remote, lb: LoadBalancer, hosts: list[str]) -> list[str]:
    """Put back every one of `hosts` left draining (an interrupted switch); the ones it put back."""
    found = servers(remote, lb)
    left = [h for h in hosts if found.get(lb.server(h), {}).get("status", "").startswith("DRAIN")]
    for host in left:
        ask(remote, lb, f"set server {lb.backend}/{lb.server(host)} state ready")
    return left
