"""`fab maintenance.on` / `maintenance.off`: every request gets a 503 maintenance page with
Retry-After, answered by the toolkit in front of the app (deploy_runtime.maintenance) on
every app host, until it is turned off. The flag and the page live in the stage's shared
folder, outside any release: the mode survives deploys and reloads. The health answers say
`"maintenance": true` and keep their status, so deploys go on and the load balancer keeps
the hosts (which answer the page) in rotation. Where the stage names a load balancer, it
answers the same page itself, even while no app host serves.
"""
from __future__ import annotations

import base64
import getpass
import json
from pathlib import Path

from . import console
from .config import ProjectConfig
from .errors import ConfigError, DeployError
from .ssh import balancer, deploylog, service
from .ssh.connection import Remote, connect, on_hosts
from .ssh.layout import Layout
from .stages import load_stage
from deploy_runtime.maintenance import DEFAULT_PAGE, FLAG, PAGE

WRITE = 'umask 022 && cat > "$1.$$.tmp" && mv -f "$1.$$.tmp" "$1"'
LB_PAGE_LIMIT = 12000  # base64 characters: one runtime API command line stays under HAProxy's 16 kB buffer


def page_text(page: str | None, root: Path) -> bytes:
    """The project's page (a path in the project, or any file), else the default one."""
    if page is None:
        return DEFAULT_PAGE
    path = (root / page).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--page {page}: {exc.strerror}") from None
    if len(data) > 1_000_000 or b"\0" in data:
        raise ConfigError(f"--page {page}: expected an HTML file (text, under 1 MB)")
    return data


def turn_on(project: ProjectConfig, stage_name: str | None, page: str | None = None, retry_after: int = 300) -> None:
    """The maintenance page on every app host (all or none), checked through each health answer."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    html = page_text(page, project.root).decode("utf-8", errors="replace")
    flag = json.dumps({"since": deploylog.now(), "retry_after": retry_after, "user": getpass.getuser()})

    def on_host(r: Remote) -> None:
        r.run(["sh", "-c", WRITE, "page", f"{layout.shared}/{PAGE}"], input=html)
        r.run(["sh", "-c", WRITE, "flag", f"{layout.shared}/{FLAG}"], input=flag)
        _expect(r, stage, True)

    with connect(stage) as remotes:
        apps = [remotes[h.name] for h in stage.app_hosts]
        try:
            on_hosts("turning maintenance on", apps, on_host)
            _at_balancer(stage, html, retry_after)
        except DeployError:
            for undo in (lambda: _remove_flags(apps, layout), lambda: _at_balancer(stage, None)):
                try:
                    undo()
                except DeployError as exc:
                    console.warn(f"could not take maintenance back off everywhere: {exc}")
            raise
        deploylog.append_or_warn(remotes[stage.migrations_host.name], layout, {
            "time": deploylog.now(), "action": "maintenance", "state": "on", "user": getpass.getuser(),
            "stage": stage.name})
    console.ok(f"maintenance is on for {stage.name}: every request gets the page (503, Retry-After {retry_after}); "
               f"fab maintenance.off --stage {stage.name} ends it")


def turn_off(project: ProjectConfig, stage_name: str | None) -> None:
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        apps = [remotes[h.name] for h in stage.app_hosts]
        _at_balancer(stage, None)
        _remove_flags(apps, layout)
        on_hosts("checking the app serves again", apps, lambda r: _expect(r, stage, False))
        deploylog.append_or_warn(remotes[stage.migrations_host.name], layout, {
            "time": deploylog.now(), "action": "maintenance", "state": "off", "user": getpass.getuser(),
            "stage": stage.name})
    console.ok(f"maintenance is off for {stage.name}: the app serves again")


def lb_page(html: str) -> str:
    """The page as the load balancer answers it: line ends are spaces (HTML renders them alike)."""
    return html.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _at_balancer(stage, html: str | None, retry_after: int = 0) -> None:
    """The same page answered by the stage's HAProxy itself, from a map set through its runtime
    API (docs/load-balancer.md): it shows even while no app host serves. None clears it."""
    if stage.lb is None:
        return
    lb, path = stage.lb, stage.lb.maintenance_map
    remote = Remote(stage, lb.host)
    try:
        balancer.ask(remote, lb, f"clear map {path}")
        if html is not None:  # HAProxy's log-format escapes line ends (%0A): they become spaces there
            page = base64.b64encode(lb_page(html).encode()).decode()
            if len(page) > LB_PAGE_LIMIT:
                raise ConfigError(f"the page is too large for the load balancer's map ({len(page)} bytes as base64, "
                                  f"at most {LB_PAGE_LIMIT})", hint="a smaller page: inline no images")
            balancer.ask(remote, lb, f"add map {path} retry_after {retry_after}")
            balancer.ask(remote, lb, f"add map {path} page {page}")
    finally:
        remote.close()


def _remove_flags(apps: list[Remote], layout: Layout) -> None:
    on_hosts("turning maintenance off", apps, lambda r: r.run(["rm", "-f", f"{layout.shared}/{FLAG}"]))


def _expect(r: Remote, stage, on: bool) -> None:
    """The host's health answer says maintenance is `on` (a host whose app does not run is left
    as it is: it reads the flag when it starts)."""
    code, body = service.health(r, stage.health_url)
    if code == 0:
        return
    if not isinstance(body, dict) or bool(body.get("maintenance")) != on:
        raise DeployError(f"{r.name}: the app's health answer does not say maintenance is {'on' if on else 'off'} "
                          "(its release predates maintenance mode)",
                          hint=f"fab deploy --stage {stage.name} once, then try again")
