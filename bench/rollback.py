"""Rollback time (issue: from the moment a failure is detected to the old release healthy
on all hosts, for 1 and 4 hosts, with and without a database downgrade; target: a code
rollback under 2 s plus worker boot time). The failure is a release that boots but
fails its health check; the deploy's own clock (the deploy log's "rollback" timing)
runs from the failed step to the old release answering healthy at the old revision
on every app host."""
from __future__ import annotations

import json
import os
import shlex
import statistics

from deploy.config import ProjectConfig
from deploy.ssh.dbops import LAUNCHER

from .project import BenchError, BenchProject
from .results import Measure, section, verdict

TITLE = "Rollback time: from a failed health check to the old release healthy everywhere"
SIZES = (1, 4)
HEALTH_TIMEOUT = 5  # how long each failing release is given before the rollback starts
BOOT = ("import time; t = time.perf_counter(); from app import create_app; create_app(); "
        "print(time.perf_counter() - t)")


def bench_rollback(project: ProjectConfig, runs: int, size: int = 4) -> str:
    """`runs` failed deploys of each kind at each fleet size up to `size`."""
    sizes = [n for n in SIZES if n <= size] or [1]
    got: dict[int, dict[str, list[float]]] = {}
    boot: list[float] = []
    # "downgrade": the database case measures the downgrade (kept, an expanded schema costs nothing)
    with BenchProject(project.root, sizes[0], health_timeout=HEALTH_TIMEOUT, undo_expand="downgrade") as bench:
        for hosts in sizes:
            bench.resize(hosts)
            bench.fab("deploy")
            got[hosts] = {"code": [], "database": []}
            for _ in range(runs):
                bench.break_health()
                got[hosts]["code"].append(_failed_deploy(bench, downgrade=False))
                bench.undo_commits(1)
                bench.add_migration()
                bench.break_health()
                got[hosts]["database"].append(_failed_deploy(bench, downgrade=True))
                bench.undo_commits(2)
                boot.append(_worker_boot(bench))
    return _section(got, boot, runs)


def _failed_deploy(bench: BenchProject, downgrade: bool) -> float:
    run = bench.fab("deploy", expect_ok=False)
    text = run.output
    if run.exited != 1 or "step 'switch' failed" not in text or "rolled back in" not in text:
        raise BenchError(f"expected a failed switch and a rollback:\n{text[-2000:]}")
    if downgrade != ("database downgraded to" in text):
        raise BenchError(f"expected {'a' if downgrade else 'no'} downgrade:\n{text[-2000:]}")
    entry = json.loads(bench.ssh("app1", "tail -1 /srv/app/deploy.log").stdout)
    return entry["timings"]["rollback"]


def _worker_boot(bench: BenchProject) -> float:
    """A new worker's own work: import the app and call its factory, in the serving release."""
    argv = ["python3", "-c", LAUNCHER, "/srv/app/shared/env", "/srv/app/current", ".venv/bin/python", "-c", BOOT]
    out = bench.ssh("app1", shlex.join(argv)).stdout
    return float(out.split()[-1])


def _section(got: dict[int, dict[str, list[float]]], boot: list[float], runs: int) -> str:
    target = 2 + statistics.median(boot)
    targets = [verdict(f"{hosts} host(s), code rollback", statistics.median(g["code"]), round(target, 2), "s")
               for hosts, g in got.items()]
    measures = [Measure("worker boot: import the app and create it (app1)", boot)]
    for hosts, g in got.items():
        measures += [
            Measure(f"{hosts} host(s): code rollback (switch back, reload, healthy)", g["code"],
                    "< 2 s + worker boot"),
            Measure(f"{hosts} host(s): code and database rollback (+ flask db downgrade)", g["database"]),
        ]
    notes = "Targets (2 s plus the worker boot): " + "; ".join(targets) + ".\n\n" + (
        "Measured by the deploy itself: from the moment the health check gave up on the new release "
        f"(not counting the health timeout spent waiting, {HEALTH_TIMEOUT} s here) to the old release answering healthy, at "
        "the old revision, on every app host; it is the `rollback` timing in the deploy log. A code rollback "
        "is: `current` switched back and a graceful reload on every host at once, then the new workers' boot "
        "and the health checks. With a database downgrade, `flask db downgrade` (which loads the app and "
        "Alembic) runs after the code is back, and the old code answers 503 until it has. Each host is a "
        "container booted with systemd, which runs the reloads. Every host is on this "
        f"machine's {os.cpu_count()} CPUs: with more hosts, all their new workers (2 per host) import the app at "
        "the same time on those CPUs, so the rollback grows with the hosts here; with CPUs of their own per "
        "server it would stay near the one-host figure."
    )
    return section(TITLE, f"app hosts {', '.join(map(str, got))}, {runs} runs each", measures, notes)
