"""Making, repairing, cleaning and removing the sandbox fleet.

`up` observes each part before acting, so a second `up` repairs what is
missing and reports the rest; `down` removes every part and then checks that
nothing is left; `reset` gives the tests clean hosts and an empty database
without re-creating the fleet.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import time
from pathlib import Path

from ..config import ProjectConfig
from . import container, dbhost, image, lbhost, network, origin, provision, sshd, stage
from .spec import Host, Sandbox, admin_name
from .system import SandboxError, ensure_packages, in_host, parallel, pids_in, require_root, script, umount_under


def sandbox_for(project: ProjectConfig, hosts: int | None = None) -> Sandbox:
    """The sandbox of `project`: `hosts` app hosts, else as many as the last `up` made."""
    settings = project.sandbox
    probe = Sandbox(settings, project.root, settings.hosts)
    count = hosts if hosts is not None else (stage.recorded_app_hosts(probe) or settings.hosts)
    if not 1 <= count <= 8:
        raise SandboxError(f"--hosts must be from 1 to 8, got {count}")
    return dataclasses.replace(probe, app_hosts=count)


def up(sandbox: Sandbox, checkout: Path | None = None) -> dict[str, list[str]]:
    """Make or repair the whole fleet; returns, per part, what had to be made."""
    require_root()
    report: dict[str, list[str]] = {"machine": ensure_packages()}
    built = image.ensure(sandbox)
    if built:
        report["machine"].append(image.describe(built))
    sandbox.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(sandbox.state_dir, 0o700)
    _remove_extra_hosts(sandbox)
    if sshd.ensure_client_key(sandbox):
        report["machine"].append("client keys")
    if network.ensure_bridge(sandbox):
        report["machine"].append(f"bridge {sandbox.bridge}")
    with image.in_use(sandbox):
        made_hosts = parallel(sandbox.hosts, lambda h: _ensure_host(sandbox, h))
    for host, made in zip(sandbox.hosts, made_hosts, strict=True):
        report[host.name] = made
    report["origin"] = _ensure_origin(sandbox, checkout)
    sshd.write_client_files(sandbox)
    stage.write_stage(sandbox)
    stage.write_state(sandbox)
    return report


def _ensure_host(sandbox: Sandbox, host: Host) -> list[str]:
    made = container.ensure_layers(sandbox, image.path(sandbox), host)
    changed = provision.prepare_host_files(sandbox, host)
    made += network.ensure_host_network(sandbox, host)
    if container.start(host):
        made.append("booted")
    elif changed:
        in_host(host, ["systemctl", "reload-or-restart", *sorted(changed)])
        made.append("reloaded " + ", ".join(sorted(changed)))
    container.wait_booted(host)
    made += provision.ensure_essentials(sandbox, host)
    if host.is_db:
        dbhost.ensure_app_database(sandbox, host)
    provision.provision_server(sandbox, host)
    sshd.wait_for_port(host.address, 22)
    return made


def _ensure_origin(sandbox: Sandbox, checkout: Path | None) -> list[str]:
    made = []
    if origin.ensure_repository(sandbox):
        made.append("repository")
    if origin.ensure_daemon(sandbox):
        made.append("git daemon")
    if checkout is not None:
        commit = origin.push_head(sandbox, checkout)
        made.append(f"pushed {commit[:12]} to main" if commit else "nothing pushed (no commit)")
    return made


def _remove_extra_hosts(sandbox: Sandbox) -> None:
    """Hosts of an earlier, bigger `up` (`--hosts` went down)."""
    recorded = stage.recorded_app_hosts(sandbox) or 0
    if recorded > sandbox.app_hosts:
        bigger = dataclasses.replace(sandbox, app_hosts=recorded)
        for host in bigger.apps[sandbox.app_hosts:]:
            _remove_host(host)
            shutil.rmtree(host.root, ignore_errors=True)


def _remove_host(host: Host) -> None:
    container.stop(host)
    if host.netns in network.netns_names():
        _kill_all(host)
    container.remove_layers(host)
    container.remove_cgroups(host)
    network.remove_host_network(host)


def _kill_all(host: Host, attempts: int = 20) -> None:
    """SIGKILL whatever still runs in the host's network namespace, until nothing does."""
    for _ in range(attempts):
        victims = pids_in(host)
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    raise SandboxError(f"processes keep appearing in {host.name}: {pids_in(host)}")


def down(sandbox: Sandbox) -> list[str]:
    """Remove everything `up` made; raise when something is still there afterwards."""
    require_root()
    known = {h.name: h for h in sandbox.hosts}
    for name in network.netns_names():  # hosts of a sandbox whose state was lost
        if name.startswith(f"{sandbox.prefix}-") and name[len(sandbox.prefix) + 1:] not in known:
            stray = name[len(sandbox.prefix) + 1:]
            known[stray] = sandbox.host(stray, (), 0)
    _stop_strays(sandbox)
    parallel(list(known.values()), _remove_host)
    origin.stop_daemon(sandbox)
    network.remove_bridge(sandbox)
    umount_under(sandbox.state_dir)
    shutil.rmtree(sandbox.state_dir, ignore_errors=True)
    deadline = time.monotonic() + 3  # links of deleted namespaces go away asynchronously
    while (left := leftovers(sandbox)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        raise SandboxError("`down` left these behind: " + ", ".join(left), hint="run `inv sandbox.down` again")
    return []


def _stop_strays(sandbox: Sandbox) -> None:
    """Containers of this prefix that no host of the state folder names (state lost, setup killed)."""
    for loop in container.supervisors(lambda name: name.startswith(f"{sandbox.prefix}-")):
        os.kill(loop, signal.SIGKILL)


def leftovers(sandbox: Sandbox) -> list[str]:
    """Anything of the sandbox still on this machine (empty after a clean `down`)."""
    left = network.leftovers(sandbox) + container.leftovers(sandbox)
    if sandbox.state_dir.exists():
        left.append(f"folder {sandbox.state_dir}")
    if origin.daemon_pid(sandbox):
        left.append("git daemon")
    return left


WIPE_SRV = """import os, shutil, sys
stash, keep = "/srv/.reset-keep", sys.argv[1:]
os.makedirs(stash, exist_ok=True)
for i, path in enumerate(keep):
    if os.path.isdir(path):
        os.rename(path, f"{stash}/{i}")
for name in os.listdir("/srv"):
    if name != ".reset-keep":
        path = os.path.join("/srv", name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
for i, path in enumerate(keep):
    if os.path.isdir(f"{stash}/{i}"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.rename(f"{stash}/{i}", path)
shutil.rmtree(stash)
"""


def reset(sandbox: Sandbox, keep: tuple[str, ...] = ()) -> None:
    """Clean hosts and an empty app database, keeping the fleet (for each test).

    `keep`: folders under /srv to carry over (caches such as built environments).
    """
    parallel(sandbox.hosts, lambda h: _reset_host(sandbox, h, keep))


def _reset_host(sandbox: Sandbox, host: Host, keep: tuple[str, ...]) -> None:
    network.set_link(host, up=True)
    container.free_disk(sandbox, host)
    if not container.is_running(host):
        container.start(host)
        container.wait_booted(host)
    units = provision.installed_units(host)
    user = sandbox.settings.user
    in_host(host, script([
        *([["systemctl", "disable", "--now", "--quiet", *units]] if units else []),
        *([["rm", "-f", *(f"/etc/systemd/system/{u}" for u in units)]] if units else []),
        ["sh", "-c", 'pkill -KILL -u "$1" || true; pkill -KILL -u "$2" || true', "kill", user, admin_name(user)],
        ["python3", "-c", WIPE_SRV, *keep],
        ["find", "/tmp", "/var/tmp", "-mindepth", "1", "-delete"],
    ]))
    provision.prepare_host_files(sandbox, host)
    in_host(host, ["sh", "-c", "systemctl daemon-reload && systemctl reset-failed"])
    if host.is_db:
        dbhost.start(host)
        dbhost.reset_archiving(host)
        dbhost.reset(host)
    if host.is_lb:
        lbhost.ready_all(sandbox, host)
    provision.provision_server(sandbox, host)
