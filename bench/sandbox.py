"""How long the sandbox takes to make and to remove (issue: up <= 15 s for 2 app
hosts + db once packages are installed, down <= 5 s), and to re-check when it is
already up. Uses a sandbox of its own beside any other."""
from __future__ import annotations

import tempfile
from pathlib import Path

from deploy.config import ProjectConfig
from deploy.sandbox import fleet
from deploy.sandbox.spec import Sandbox
from deploy.sandbox.system import ensure_packages

from .results import Measure, section, timed

TITLE = "Sandbox: up and down"


def bench_sandbox(project: ProjectConfig, runs: int, size: int = 2) -> str:
    """Time `runs` cycles of up (fresh), up (again, nothing to do), down, with `size` app hosts."""
    hosts = size
    ensure_packages()  # once: the target is for a machine with the packages installed
    state = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    sandbox = Sandbox.throwaway("fdb", "10.213.7.0/24", state / "sandbox", project.root, hosts)
    fleet.down(sandbox)
    fresh, again, down = [], [], []
    try:
        for _ in range(runs):
            fresh.append(timed(lambda: fleet.up(sandbox, project.root)))
            again.append(timed(lambda: fleet.up(sandbox, project.root)))
            down.append(timed(lambda: fleet.down(sandbox)))
    finally:
        fleet.down(sandbox)
        state.rmdir()
    measures = [
        Measure(f"up, fresh ({hosts} app hosts + db)", fresh, "<= 15 s"),
        Measure("up, already up (checks only)", again),
        Measure("down (then checked: nothing left)", down, "<= 5 s"),
    ]
    notes = ("A fresh `up` includes initdb and starting PostgreSQL on the db host, sshd on every host, "
             "and pushing HEAD to the origin; hosts are made in parallel.")
    return section(TITLE, f"{hosts} app hosts + 1 db host, {runs} runs", measures, notes)
