"""The files `up` writes for the controller: the stage file that `--stage sandbox`
reads, and state.json (how many hosts this sandbox has)."""
from __future__ import annotations

import json

from .provision import env_file
from .spec import Sandbox, admin_name
from .system import write_file


def _toml(value: object) -> str:
    """A TOML value for a string or a list of strings (JSON's escapes are TOML's)."""
    return json.dumps(value)


def stage_text(sandbox: Sandbox) -> str:
    s = sandbox.settings
    lines = [
        "# Written by `inv sandbox.up` for `--stage sandbox`; rewritten by every `up`.",
        "# It holds no secret: the database password is only in each host's env file.",
        "[stage]",
        f"user = {_toml(s.user)}",
        f"admin_user = {_toml(admin_name(s.user))}",
        'bind = "0.0.0.0:8000"',
        f"key = {_toml(str(sandbox.key))}",
        f"admin_key = {_toml(str(sandbox.admin_key))}",
        f"known_hosts = {_toml(str(sandbox.known_hosts))}",
        f"repo = {_toml(sandbox.origin_url)}",
        f"deploy_to = {_toml(s.deploy_to)}",
        f"service = {_toml(s.service)}",
        f"env_file = {_toml(env_file(sandbox))}",
    ]
    for host in (h for h in sandbox.hosts if not h.is_lb):  # the load balancer is not a deploy target
        lines += ["", "[[stage.hosts]]", f"name = {_toml(host.name)}",
                  f"address = {_toml(host.address)}", f"roles = {_toml(list(host.roles))}"]
    lines += ["", "# HAProxy in front of the app hosts: drained through its runtime API over SSH.",
              "[stage.lb]", f"address = {_toml(sandbox.lb.address)}", f"name = {_toml(sandbox.lb.name)}"]
    return "\n".join(lines) + "\n"


def write_stage(sandbox: Sandbox) -> None:
    write_file(sandbox.stage_file, stage_text(sandbox), 0o644)


def write_state(sandbox: Sandbox) -> None:
    state = {"prefix": sandbox.prefix, "app_hosts": sandbox.app_hosts,
             "hosts": [h.name for h in sandbox.hosts]}
    write_file(sandbox.state_file, json.dumps(state, indent=2) + "\n", 0o600)


def recorded_app_hosts(sandbox: Sandbox) -> int | None:
    """How many app hosts the last `up` made, or None when there is no sandbox."""
    try:
        return int(json.loads(sandbox.state_file.read_text())["app_hosts"])
    except (OSError, ValueError, KeyError):
        return None

