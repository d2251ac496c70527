"""Zero downtime (issue: continuous requests through the load balancer during 10 consecutive
deploys: no change, code change, dependency change, new migration, and one that fails
and rolls back; failed requests and p50/p99 against the same load with no deploy;
target 0 failed and p99 at most 2x the baseline), side by side with the same load
during plain `systemctl restart`s, one host after another, as a typical fabfile does."""
from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request

from deploy.config import ProjectConfig
from deploy.sandbox import lbhost

from .load import Load, Summary, summarize
from .project import BenchError, BenchProject
from .results import Measure, section, verdict

TITLE = "Zero downtime: requests during deploys, against plain restarts"
RATE = 50            # requests a second per app host, all through the load balancer
BASELINE_SECONDS = 10
SETTLE_SECONDS = 2   # after the last deploy or restart, for requests still queued
RESTART_EVERY = 2.5  # seconds between two plain restarts of one host (systemd's start limit)


def _no_change(bench: BenchProject) -> None:
    bench.fab("deploy")


def _code(bench: BenchProject) -> None:
    bench.change_code()
    bench.fab("deploy")


def _dependencies(bench: BenchProject) -> None:
    bench.change_dependencies()
    bench.fab("deploy")


def _migration(bench: BenchProject) -> None:
    bench.add_migration()
    bench.fab("deploy")


def _fails(bench: BenchProject) -> None:
    bench.add_migration(failing=True)
    run = bench.fab("deploy", expect_ok=False)
    if run.exited != 1 or "step 'migrate' failed" not in run.output:
        raise BenchError(f"expected the failing migration to fail the deploy:\n{run.output[-2000:]}")
    bench.undo_commits(1)


KINDS = {"no change": _no_change, "code change": _code, "dependency change": _dependencies,
         "new migration": _migration, "failed migration, rolled back": _fails}


def bench_zero_downtime(project: ProjectConfig, runs: int, size: int = 10) -> str:
    """`runs` rounds of: a quiet baseline, `size` deploys (the kinds in turn), `size` plain restarts."""
    deploys = size
    rounds: list[dict[str, Summary]] = []
    with BenchProject(project.root, 2) as bench:
        bench.fab("deploy")
        lbhost.wait_in_rotation(bench.sandbox.lb)
        urls = [bench.sandbox.lb_url + "boards"]
        _seed(urls[0])
        for _ in range(runs):
            rounds.append(_round(bench, urls, deploys))
    return _section(rounds, deploys, runs)


def _round(bench: BenchProject, urls: list[str], deploys: int) -> dict[str, Summary]:
    kinds = list(KINDS.values())
    with Load(urls, RATE * len(bench.sandbox.apps)) as load:
        start = time.monotonic()
        time.sleep(BASELINE_SECONDS)
        deploys_start = time.monotonic()
        spans: dict[str, list[tuple[float, float]]] = {}
        for i in range(deploys):
            began = time.monotonic()
            kinds[i % len(kinds)](bench)
            spans.setdefault(list(KINDS)[i % len(kinds)], []).append((began, time.monotonic()))
        deploys_end = time.monotonic()
        time.sleep(SETTLE_SECONDS)
        restarts_start = time.monotonic()
        last: dict[str, float] = {}
        for _ in range(deploys):
            for host in bench.sandbox.apps:
                # systemd refuses a 6th start of a unit within 10 s (StartLimitBurst): one in 2.5 s per host
                time.sleep(max(0.0, last.get(host.name, 0.0) + RESTART_EVERY - time.monotonic()))
                last[host.name] = time.monotonic()
                bench.ssh(host.name, "sudo -n systemctl restart app.service")
        restarts_end = time.monotonic() + SETTLE_SECONDS
        time.sleep(SETTLE_SECONDS)
    by_kind = {kind: summarize([r for a, b in each for r in load.between(a, b)]) for kind, each in spans.items()}
    return {"baseline": summarize(load.between(start, deploys_start)),
            "deploys": summarize(load.between(deploys_start, deploys_end + SETTLE_SECONDS)),
            "restarts": summarize(load.between(restarts_start, restarts_end)), **by_kind}


SEED_BOARDS = 5  # GET /boards counts each board's cards with a query of its own


def _seed(url: str) -> None:
    """A few boards, so that each request reads rows."""
    for n in range(SEED_BOARDS):
        body = json.dumps({"name": f"board {n}"}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()


def _section(rounds: list[dict[str, Summary]], deploys: int, runs: int) -> str:
    def each(window: str, field: str, scale: float = 1) -> list[float]:
        return [round(getattr(r[window], field) * scale, 1) for r in rounds]

    measures = [
        Measure("no deploy (baseline): requests", each("baseline", "requests"), unit="req"),
        Measure("no deploy (baseline): failed", each("baseline", "failed"), unit="req"),
        Measure("no deploy (baseline): p50", each("baseline", "p50", 1000), unit="ms"),
        Measure("no deploy (baseline): p99", each("baseline", "p99", 1000), unit="ms"),
        Measure(f"during {deploys} deploys: requests", each("deploys", "requests"), unit="req"),
        Measure(f"during {deploys} deploys: failed (connection errors and 5xx)", each("deploys", "failed"),
                "0", unit="req"),
        Measure(f"during {deploys} deploys: p50", each("deploys", "p50", 1000), unit="ms"),
        Measure(f"during {deploys} deploys: p99", each("deploys", "p99", 1000), unit="ms"),
        Measure(f"during {deploys} deploys: slowest", each("deploys", "slowest", 1000), unit="ms"),
        Measure("p99 during deploys / baseline p99",
                [round(r["deploys"].p99 / r["baseline"].p99, 1) for r in rounds], "<= 2", unit="×"),
    ]
    measures += [Measure(f"p99 during the {kind} deploys", each(kind, "p99", 1000), unit="ms")
                 for kind in KINDS if kind in rounds[0]]
    measures += [
        Measure(f"during {deploys} plain restarts of each host in turn: requests", each("restarts", "requests"),
                unit="req"),
        Measure(f"during {deploys} plain restarts: failed", each("restarts", "failed"), unit="req"),
        Measure(f"during {deploys} plain restarts: p99", each("restarts", "p99", 1000), unit="ms"),
    ]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(rounds[-1]["restarts"].kinds.items())) or "none"
    failed = statistics.median(r["deploys"].failed for r in rounds)
    ratio = statistics.median(r["deploys"].p99 / r["baseline"].p99 for r in rounds)
    notes = "Targets: " + "; ".join([verdict("failed requests during deploys", failed, 0, "req"),
                                      verdict("p99 during deploys / baseline p99", ratio, 2, "×")]) + ".\n\n" + (
        f"Load: an open-loop client on this machine (bench/load.py), {2 * RATE} GET /boards ({SEED_BOARDS} boards) "
        f"a second through the sandbox's HAProxy (round robin over the 2 app hosts, health-checked with GET /livez "
        f"every second), each on a new connection, latency counted from when the request was due. Deploys, in turn: "
        f"{', '.join(KINDS)}. Failures in the last round's plain restarts: {kinds}. A plain restart (paced to one per host "
        f"every {RESTART_EVERY} s, under systemd's start limit) stops the old master before the new one listens, so "
        "the host resets the connections waiting in its backlog and refuses new ones meanwhile (HAProxy retries a "
        "refused connection on the other host, but a connection that was accepted and then reset is a 502 it "
        "cannot retry); the deploy's graceful "
        "reload (HUP) keeps the listening socket, and an old worker keeps serving until the new ones have loaded "
        "the app (the hooks in deploy_runtime/reloads.py), so no request fails and none waits for a worker to boot. "
        f"What raises the p99 here is CPU: every host, the database, the controller and this client share this "
        f"machine's {os.cpu_count()} CPUs, and at the switch both hosts boot 2 new workers at once (each "
        "imports the app: about 0.4 CPU-s) beside the serving ones. The deploys that fail at the migration "
        "(after the build and its boot check, before any switch) keep the p99 near the baseline."
    )
    return section(TITLE, f"2 app hosts behind HAProxy, {2 * RATE} req/s, {deploys} deploys, {runs} runs",
                   measures, notes)
