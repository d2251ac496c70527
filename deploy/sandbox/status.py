"""What the sandbox looks like right now, read from the machine (never from memory):
hosts, their links, systemd's state, sshd, disk, processes; the database; the load
balancer; the origin."""
from __future__ import annotations

from collections import Counter

from ..local.git import git
from . import container, dbhost, image, network, origin
from .hostfs import entries
from .spec import Host, Sandbox
from .system import in_host, pids_in, process_info


def parse_size(text: str) -> int:
    """Bytes in a tmpfs size such as 512m or 2g."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def _users(host: Host) -> dict[int, str]:
    """uid -> name from the host's own /etc/passwd."""
    return {int(fields[2]): name for name, fields in entries(host, "passwd").items() if fields[2].isdigit()}


def processes(host: Host) -> list[dict]:
    """What runs in the host, as (command, user, count), busiest first."""
    users, seen = _users(host), Counter()
    for pid in pids_in(host):
        info = process_info(pid)
        if info:
            seen[(info[0], users.get(info[1], str(info[1])))] += 1
    return [{"command": c, "user": u, "count": n} for (c, u), n in seen.most_common()]


def host_status(sandbox: Sandbox, host: Host) -> dict:
    running = container.is_running(host)
    link = network.link_is_up(host)
    entry: dict = {
        "name": host.name, "roles": list(host.roles), "address": host.address,
        "running": running,
        "network": "missing" if link is None else ("up" if link else "cut"),
    }
    if running:
        used, size = container.disk_usage(host)
        state = in_host(host, ["sh", "-c", "systemctl is-system-running; ps -p 1 -o comm=; "
                                           "systemctl is-active ssh.service"], check=False).stdout.split()
        entry["system"], entry["pid1"], entry["sshd"] = (state + ["?"] * 3)[:3]
        entry["sshd"] = "running" if entry["sshd"] == "active" else "stopped"
        entry["disk"] = {"used": used, "size": size,
                         "full": size < parse_size(sandbox.settings.disk_size)}
        entry["processes"] = processes(host)
    return entry


def origin_status(sandbox: Sandbox) -> dict:
    branches = {}
    if (sandbox.origin / "HEAD").exists():
        refs = git(sandbox.origin, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
        branches = dict(line.split() for line in refs.splitlines())
    return {
        "push_url": str(sandbox.origin),
        "fetch_url": sandbox.origin_url,
        "daemon": "running" if origin.daemon_pid(sandbox) else "stopped",
        "branches": branches,
    }


def sandbox_status(sandbox: Sandbox) -> dict:
    """Everything `inv sandbox.status` shows; {"up": False} when there is no sandbox."""
    if not sandbox.state_file.exists():
        return {"up": False, "prefix": sandbox.prefix, "state_dir": str(sandbox.state_dir)}
    hosts = [host_status(sandbox, h) for h in sandbox.hosts]
    db = sandbox.db
    db_running = container.is_running(db) and dbhost.is_running(db)
    return {
        "up": all(h["running"] for h in hosts),
        "prefix": sandbox.prefix,
        "subnet": str(sandbox.network),
        "state_dir": str(sandbox.state_dir),
        "user": sandbox.settings.user,
        "ssh_config": str(sandbox.ssh_config),
        "stage_file": str(sandbox.stage_file),
        "hosts": hosts,
        "database": {"host": db.name, "running": db_running,
                     "url": sandbox.database_url_template.format(password="***")},
        "load_balancer": {"host": sandbox.lb.name, "url": sandbox.lb_url},
        "image": image.info(sandbox),
        "origin": origin_status(sandbox),
    }
