"""The sandbox network: a bridge on this machine, and per host a network namespace
joined to it by a veth pair. There is no route out of the subnet, so the hosts
reach each other and this machine's sandbox address, and nothing else (no
package index)."""
from __future__ import annotations

import json

from .spec import Host, Sandbox
from .system import run


def _links() -> dict[str, dict]:
    return {link["ifname"]: link for link in json.loads(run(["ip", "-json", "link", "show"]).stdout)}


def netns_names() -> set[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def ensure_bridge(sandbox: Sandbox) -> bool:
    """Create the bridge with this machine's sandbox address; False when it was there."""
    if sandbox.bridge in _links():
        run(["ip", "link", "set", sandbox.bridge, "up"])
        return False
    run(["ip", "link", "add", sandbox.bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{sandbox.gateway}/{sandbox.network.prefixlen}", "dev", sandbox.bridge])
    run(["ip", "link", "set", sandbox.bridge, "up"])
    return True


def ensure_host_network(sandbox: Sandbox, host: Host) -> list[str]:
    """The host's namespace, its veth on the bridge and its address; returns what it made."""
    made = []
    if host.netns not in netns_names():
        run(["ip", "netns", "add", host.netns])
        made.append("network namespace")
    if host.link not in _links():
        run(["ip", "link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.netns])
        run(["ip", "link", "set", host.link, "master", sandbox.bridge, "up"])
        netns = ["ip", "-n", host.netns]
        run([*netns, "addr", "add", f"{host.address}/{sandbox.network.prefixlen}", "dev", "eth0"])
        run([*netns, "link", "set", "eth0", "up"])
        run([*netns, "link", "set", "lo", "up"])
        made.append("link")
    return made


def link_is_up(host: Host) -> bool | None:
    """True/False for the host's link on the bridge; None when it does not exist."""
    link = _links().get(host.link)
    return None if link is None else "UP" in link.get("flags", [])


def set_link(host: Host, up: bool) -> None:
    """Cut (down) or restore (up) the host's only link: packets are dropped, as in a real outage."""
    run(["ip", "link", "set", host.link, "up" if up else "down"])


def remove_host_network(host: Host) -> None:
    """Delete the namespace (which deletes its veth) and a stray link."""
    if host.netns in netns_names():
        run(["ip", "netns", "delete", host.netns])
    if host.link in _links():  # the kernel may be removing it already with the namespace
        run(["ip", "link", "delete", host.link], check=False)


def remove_bridge(sandbox: Sandbox) -> None:
    if sandbox.bridge in _links():
        run(["ip", "link", "delete", sandbox.bridge])


def leftovers(sandbox: Sandbox) -> list[str]:
    """Namespaces and links with the sandbox's prefix that still exist."""
    mine = f"{sandbox.prefix}-"
    return sorted([f"netns {n}" for n in netns_names() if n.startswith(mine)]
                  + [f"link {n}" for n in _links() if n.startswith(mine)])
