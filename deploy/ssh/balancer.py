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
FORCED_DRAIN = 0x08  # srv_admin_state bit of `show servers state`: drained through the API


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
    unchecked = [h for h in hosts if known[lb.server(h)]["status"].startswith("no check")]
    if unchecked:
        raise BalancerError(f"{remote.name}: HAProxy does not health-check {', '.join(unchecked)}: a drained host "
                            "could never be seen healthy again", hint="add `check` to those server lines (docs/load-balancer.md)")
    return ", ".join(f"{h} {known[lb.server(h)]['status']}" for h in hosts)


def drain(remote: Remote, lb: LoadBalancer, host: str) -> bool:
    """No new requests to `host`, then until its open ones have finished (or drain_timeout).
    Refused (False, nothing done) when no other server of the backend is up to take its
    traffic: the last host in rotation is never taken out."""
    name = lb.server(host)
    if not any(s["status"] in IN_ROTATION for other, s in servers(remote, lb).items() if other != name):
        return False
    ask(remote, lb, f"set server {lb.backend}/{name} state drain")
    deadline = time.monotonic() + lb.drain_timeout
    while time.monotonic() < deadline:
        if servers(remote, lb)[name]["scur"] in ("0", ""):
            break
        time.sleep(0.1)
    return True


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
    """Put back every one of `hosts` left drained (an interrupted switch), whatever its check
    says now; the ones it put back."""
    left = [h for h in hosts if lb.server(h) in drained(remote, lb)]
    for host in left:
        ask(remote, lb, f"set server {lb.backend}/{lb.server(host)} state ready")
    return left


def drained(remote: Remote, lb: LoadBalancer) -> set[str]:
    """The backend's servers drained through the API (a failing check shows them DOWN, not DRAIN)."""
    lines = [line.split() for line in ask(remote, lb, f"show servers state {lb.backend}").splitlines()]
    header = next((line[1:] for line in lines if line[:1] == ["#"]), [])
    if "srv_name" not in header or "srv_admin_state" not in header:
        return set()
    name, admin = header.index("srv_name"), header.index("srv_admin_state")
    return {row[name] for row in lines if len(row) > max(name, admin) and row[0] != "#"
            and row[admin].isdigit() and int(row[admin]) & FORCED_DRAIN}
