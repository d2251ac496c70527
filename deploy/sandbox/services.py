"""Service management on hosts without systemd.

The hosts run the project's systemd unit files through docker-systemctl-replacement,
a `systemctl` (and `journalctl`) that reads unit files and runs their processes
without a systemd daemon. It is mounted over /usr/bin/systemctl and
/usr/bin/journalctl in every host, so the deploy issues exactly the commands it
issues in production (`sudo systemctl reload app.service`). What it does not
do (socket activation, cgroups) is listed in the README's sandbox section.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .spec import Sandbox
from .system import SandboxError, write_file

STAND_IN = "systemctl2"     # the docker-systemctl-replacement package
SERVER_PYTHON = "/usr/bin/python3"
TOOLS = {"systemctl": "systemctl3.py", "journalctl": "journalctl3.py"}


def stand_in_source(name: str) -> Path:
    spec = importlib.util.find_spec(STAND_IN)
    if spec is None or not spec.submodule_search_locations:
        raise SandboxError(
            "docker-systemctl-replacement is not installed on this machine",
            hint="./dev setup (it is in requirements/dev.lock)",
        )
    return Path(list(spec.submodule_search_locations)[0]) / TOOLS[name]


def tool_path(sandbox: Sandbox, name: str) -> Path:
    return sandbox.systemctl.parent / name


def install_stand_in(sandbox: Sandbox) -> None:
    """Copy the stand-in's scripts where the hosts mount them, run by the servers' Python."""
    for name in TOOLS:
        source = stand_in_source(name).read_text()
        body = source.split("\n", 1)[1] if source.startswith("#!") else source
        # journalctl hands over to "systemctl3.py" beside itself; here that is "systemctl".
        body = body.replace('systemctl_py = "systemctl3.py"', 'systemctl_py = "systemctl"')
        write_file(tool_path(sandbox, name), f"#!{SERVER_PYTHON}\n{body}", 0o755)
