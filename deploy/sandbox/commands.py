"""`inv sandbox.*`: one function per verb, project config first, output for people."""
from __future__ import annotations

import json
import time

from .. import console
from ..config import ProjectConfig
from . import faults, fleet, image, status
from .system import SandboxError, require_root


def up(project: ProjectConfig, hosts: str | int | None = None) -> dict:
    """Make or repair the fleet, push HEAD to its origin, write the stage files."""
    if hosts is not None and not str(hosts).isdigit():
        raise SandboxError(f"--hosts must be a number from 1 to 8, got {hosts!r}")
    sandbox = fleet.sandbox_for(project, int(hosts) if hosts is not None else None)
    started = time.monotonic()
    report = fleet.up(sandbox, project.root)
    for part, made in report.items():
        console.ok(f"{part}: " + (", ".join(made) if made else "already there"))
    console.say(f"sandbox up in {time.monotonic() - started:.1f}s: "
                f"{sandbox.app_hosts} app host(s), a database host and a load balancer on {sandbox.network}")
    console.say(f"  ssh:    ssh -F {sandbox.ssh_config} app1")
    console.say(f"  push:   git push {sandbox.origin} HEAD:refs/heads/NAME")
    console.say(f"  stage:  {sandbox.stage_file}")
    console.say(f"  users:  {sandbox.lb_url} (the load balancer)")
    return report


def build_image(project: ProjectConfig, rebuild: bool = False) -> None:
    """Build the hosts' image when missing (or `rebuild`), and say which one is in use."""
    sandbox = fleet.sandbox_for(project)
    require_root()
    built = image.ensure(sandbox, rebuild=rebuild)
    current = image.info(sandbox)
    console.ok(image.describe(built) if built else f"{image.describe(current)} (cached)")
    console.say(f"  {image.path(sandbox).parent}")


def down(project: ProjectConfig) -> None:
    sandbox = fleet.sandbox_for(project)
    started = time.monotonic()
    removed = fleet.down(sandbox)
    extra = f" (and {', '.join(removed)})" if removed else ""
    console.ok(f"sandbox removed in {time.monotonic() - started:.1f}s{extra}; nothing of it is left")


def show_status(project: ProjectConfig, as_json: bool = False) -> dict:
    sandbox = fleet.sandbox_for(project)
    state = status.sandbox_status(sandbox)
    if as_json:
        console.say(json.dumps(state, indent=2))
        return state
    if "hosts" not in state:
        console.say(f"no sandbox ({state['state_dir']} does not exist); run `inv sandbox.up`")
        return state
    console.heading(f"sandbox {state['prefix']} on {state['subnet']}: " + ("up" if state["up"] else "DEGRADED"))
    for host in state["hosts"]:
        console.say(_host_line(host))
    db, origin = state["database"], state["origin"]
    console.say(f"database  {db['url']}  " + ("running" if db["running"] else "STOPPED"))
    console.say(f"users     {state['load_balancer']['url']}  (HAProxy on {state['load_balancer']['host']})")
    console.say(f"origin    push: {origin['push_url']}   hosts fetch: {origin['fetch_url']}  ({origin['daemon']})")
    for branch, commit in origin["branches"].items():
        console.say(f"          {branch} {commit[:12]}")
    console.say(f"ssh       ssh -F {state['ssh_config']} HOST")
    return state


def _host_line(host: dict) -> str:
    head = f"{host['name']:<6} {host['address']:<15} {','.join(host['roles']):<15}"
    if not host["running"]:
        return f"{head} MISSING (run `inv sandbox.up` to repair)"
    disk = host["disk"]
    used = f"{disk['used'] / 2**20:.0f}M/{disk['size'] / 2**20:.0f}M" + (" FULL" if disk["full"] else "")
    procs = ", ".join(f"{p['command']}({p['user']})" + (f"x{p['count']}" if p["count"] > 1 else "")
                      for p in host["processes"])
    network = "network " + host["network"].upper() if host["network"] != "up" else "network up"
    system = f"systemd {host['system']}" if host["pid1"] == "systemd" else f"PID 1 {host['pid1']}"
    return f"{head} {network:<12} {system:<16} sshd {host['sshd']:<8} disk {used:<12} {procs}"


def fault(project: ProjectConfig, host: str, action: str) -> str:
    sandbox = fleet.sandbox_for(project)
    if not sandbox.state_file.exists():
        raise SandboxError("there is no sandbox", hint="inv sandbox.up")
    message = faults.apply(sandbox, host, action)
    console.ok(message)
    return message
