"""How long the sandbox takes to make and to remove (issue: image build on a fresh
machine <= 2 min; up with the image cached <= 10 s for 2 app hosts, a db host and a
load balancer; down <= 5 s with nothing left behind), how long an `up` takes when all
is up already, and each host's memory. Uses a sandbox of its own beside any other."""
from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from deploy.config import ProjectConfig
from deploy.sandbox import fleet, image
from deploy.sandbox.spec import Host, Sandbox
from deploy.sandbox.system import ensure_packages, pids_in

from .results import Measure, section, timed

TITLE = "Sandbox: image, up and down"


def bench_sandbox(project: ProjectConfig, runs: int, size: int = 2, build_image: bool = True) -> str:
    """`runs` cycles of up (fresh), up (again, nothing to do), down, with `size` app hosts; and
    once, with `build_image`, the image built from scratch in a folder of its own."""
    hosts = size
    ensure_packages()  # once: the targets are for a machine with the packages installed
    state = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    sandbox = Sandbox.throwaway("fdb", "10.213.7.0/24", state / "sandbox", project.root, hosts)
    fleet.down(sandbox)
    image.ensure(sandbox)  # the cached image the `up`s boot from
    built = _build_fresh(state) if build_image else None
    fresh, again, down, memory = [], [], [], {}
    try:
        for _ in range(runs):
            fresh.append(timed(lambda: fleet.up(sandbox, project.root)))
            this_run: dict[str, list[float]] = {}
            for host in sandbox.hosts:
                this_run.setdefault(_kind(host), []).append(_pss(host) / 2**20)
            for kind, values in this_run.items():  # one value a run: the mean of the hosts of that kind
                memory.setdefault(kind, []).append(round(statistics.mean(values), 1))
            again.append(timed(lambda: fleet.up(sandbox, project.root)))
            down.append(timed(lambda: fleet.down(sandbox)))
    finally:
        fleet.down(sandbox)
        shutil.rmtree(state, ignore_errors=True)
    measures = ([Measure("image build (debootstrap, from Debian's archive)", [built["seconds"]], "<= 120 s")]
                if built else [])
    measures += [
        Measure(f"up, image cached ({hosts} app hosts + db + backup + lb, booted)", fresh, "<= 10 s"),
        Measure("up, already up (checks only)", again),
        Measure("down (then checked: nothing left)", down, "<= 5 s"),
    ]
    measures += [Measure(f"memory of an idle {kind} host (PSS of its processes)", values, unit="MiB")
                 for kind, values in memory.items()]
    notes = ("A fresh `up` mounts each host's layer over the image, boots it with systemd-nspawn (systemd, "
             "journald, logind, dbus, ssh.service; PostgreSQL 15 on the db host, HAProxy on the load balancer) "
             "and waits until systemd reports the boot finished, creates the app's role and database, and pushes "
             "HEAD to the origin; hosts are made in parallel. `down` kills each host's PID 1 (the container ends "
             "with it), unmounts its layer and /srv, removes its cgroups, namespace and link, and then checks "
             "that nothing of the sandbox is left. "
             + (f"The image: {image.describe(built)}, downloaded from {built['mirror']}; it is built once and "
                f"cached under .local/images/." if built else "The image build was not measured in this run."))
    return section(TITLE, f"{hosts} app hosts + 1 db host + 1 backup host + 1 load balancer, {runs} runs", measures, notes)


def _build_fresh(state: Path) -> dict:
    """The image built in a folder of its own, as on a machine that has none."""
    folder = state / "images"
    try:
        return image.build_at(folder)
    finally:
        image.remove_tree(folder)


def _kind(host: Host) -> str:
    return "app" if "app" in host.roles else host.roles[0]


def _pss(host: Host) -> int:
    """Bytes of memory the host's processes use (proportional set size: shared pages split)."""
    total = 0
    for pid in pids_in(host):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total
