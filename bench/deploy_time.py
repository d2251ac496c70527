"""Deploy time across hosts (issue: 1, 2, 4 and 8 app hosts; a deploy with nothing
changed and one with a code change; wall time and SSH commands per host; 8 hosts at
most 1.5x one host; a no-change deploy to one host under 3 s, its floor explained),
side by side with a naive fabfile that deploys one host after another."""
from __future__ import annotations

import json
import os
import shlex
import statistics
from pathlib import Path

from deploy.config import ProjectConfig

from .project import BenchProject, Deployed
from .results import Measure, section, verdict

TITLE = "Deploy time across hosts, against a naive sequential fabfile"
SIZES = (1, 2, 4, 8)
NAIVE = Path(__file__).resolve().parent / "naive"
STEPS = ("preflight", "build", "backup", "migrate", "switch", "finish")
NAIVE_SETUP = """set -eu
cd /srv/app
[ -d naive ] || git clone --quiet "$1" naive
digest=$(basename "$(readlink current/.venv)")
ln -sfn "../shared/venvs/$digest" naive/.venv
ln -sfn "../shared/wheels/$digest" naive/wheels
ln -sfn ../shared/env naive/.env
rm -rf naive/.deploy && cp -r current/.deploy naive/.deploy  # the toolkit's runtime: the unit serves it
readlink current > .before-naive
ln -sfn naive current
sudo -n systemctl restart app.service
"""
NAIVE_TEARDOWN = """set -eu
cd /srv/app
ln -sfn "$(cat .before-naive)" current
rm -rf naive .before-naive
sudo -n systemctl restart app.service
"""


def bench_deploy_time(project: ProjectConfig, runs: int, size: int = 8) -> str:
    """`runs` no-change and code-change deploys, then naive ones, at each fleet size up to `size`."""
    sizes = [n for n in SIZES if n <= size] or [1]
    got: dict[int, dict[str, list]] = {}
    with BenchProject(project.root, sizes[0]) as bench:
        for hosts in sizes:
            bench.resize(hosts)
            bench.fab("deploy")  # untimed: new hosts get the environment
            got[hosts] = _at_size(bench, runs)
    return _section(got, runs)


def _at_size(bench: BenchProject, runs: int) -> dict[str, list]:
    got: dict[str, list] = {"same": [], "code": [], "naive": [], "commands": [], "steps": [], "cpu": []}
    for _ in range(runs):
        same = bench.fab("deploy")
        got["same"].append(same.seconds)
        got["cpu"].append(round(same.cpu_seconds, 2))
        got["commands"].append(_commands(bench, same))
        got["steps"].append(_step_timings(bench))
        bench.change_code()
        got["code"].append(bench.fab("deploy").seconds)
    _on_apps(bench, NAIVE_SETUP, bench.sandbox.origin_url)
    try:
        for _ in range(runs):
            bench.change_code()
            got["naive"].append(_naive(bench))
    finally:
        _on_apps(bench, NAIVE_TEARDOWN)
    return got


def _commands(bench: BenchProject, run: Deployed) -> tuple[int, int]:
    """SSH commands on the migrations host (app1, which also holds the lock, journal and log)
    and the most on any other app host."""
    counts = run.per_host()
    others = [c for host, c in counts.items() if host != "app1"]
    return counts.get("app1", 0), max(others, default=0)


def _step_timings(bench: BenchProject) -> dict[str, float]:
    return json.loads(bench.ssh("app1", "tail -1 /srv/app/deploy.log").stdout)["timings"]


def _on_apps(bench: BenchProject, script: str, *args: str) -> None:
    for host in bench.sandbox.apps:
        bench.ssh(host.name, shlex.join(["sh", "-c", script, "naive", *args]))


def _naive(bench: BenchProject) -> float:
    """One deploy by the naive fabfile, Fabric running its task on each host in turn."""
    hosts = ",".join(h.name for h in bench.sandbox.apps)
    return bench.fab("-r", str(NAIVE), "-S", str(bench.sandbox.ssh_config), "-H", hosts, "deploy").seconds


def _section(got: dict[int, dict[str, list]], runs: int) -> str:
    measures: list[Measure] = []
    for hosts, g in got.items():
        measures += [
            Measure(f"{hosts} host(s): no-change deploy", g["same"], "< 3 s" if hosts == 1 else ""),
            Measure(f"{hosts} host(s): code-change deploy", g["code"]),
            Measure(f"{hosts} host(s): naive fabfile, code change", g["naive"]),
            Measure(f"{hosts} host(s): CPU time used by a no-change deploy (whole machine)", g["cpu"], unit="CPU s"),
            Measure(f"{hosts} host(s): SSH commands on app1 (migrations host), no-change",
                    [c[0] for c in g["commands"]], unit="cmds"),
        ]
        if hosts > 1:
            measures.append(Measure(f"{hosts} host(s): SSH commands on each other app host, no-change",
                                    [c[1] for c in g["commands"]], unit="cmds"))
    first, last = min(got), max(got)
    if last > first:
        for kind, label in (("same", "no-change"), ("code", "code-change"), ("naive", "naive fabfile")):
            measures.append(Measure(f"{label}: {last} hosts / {first} host", _ratios(got[last][kind], got[first][kind]),
                                    "<= 1.5" if kind != "naive" else "", unit="×"))
    steps = {s: [t.get(s, 0.0) for t in got[first]["steps"]] for s in STEPS}
    measures += [Measure(f"{first} host(s), no-change: step {s}", v) for s, v in steps.items()]
    return section(TITLE, f"app hosts {', '.join(map(str, got))}, {runs} runs each", measures, _notes(got))


def _ratios(a: list[float], b: list[float]) -> list[float]:
    return [round(x / y, 2) for x, y in zip(a, b, strict=True)]


def _notes(got: dict[int, dict[str, list]]) -> str:
    first, last = min(got), max(got)
    same = statistics.median(got[first]["same"])
    cores = os.cpu_count() or 1
    cpu_first, cpu_last = statistics.median(got[first]["cpu"]), statistics.median(got[last]["cpu"])
    targets = [verdict(f"{first} host, no-change", same, 3, "s")]
    if last > first:
        for kind, label in (("same", "no-change"), ("code", "code-change")):
            ratio = statistics.median(_ratios(got[last][kind], got[first][kind]))
            targets.append(verdict(f"{last} hosts / {first} host, {label}", ratio, 1.5, "×"))
    return "Targets: " + "; ".join(targets) + ".\n\n" + (
        f"Wall time of `fab deploy` as a user runs it (Python start-up included), on a sandbox of its own. "
        f"The naive fabfile (bench/naive/fabfile.py) runs 4 SSH commands per host, one host after another: "
        f"git pull, pip install (all satisfied, from the wheels already on the host), flask db upgrade, "
        f"systemctl restart; it has no release folders, health check, lock or rollback, and drops requests "
        f"while each host restarts (see the zero-downtime table). The project's deploy takes {same:.1f} s "
        f"to one host with nothing changed; where it goes is in the step rows: the build includes loading the "
        f"new release's app once (`gunicorn --check-config`, about 0.5 s), the switch a graceful reload "
        f"through systemd (each host is a container booted with systemd) and the new workers' boot; `fab` itself "
        f"starts in about 0.6 s (Python, Fabric, Alembic). Why more hosts cost more here: every host is on this "
        f"machine's {cores} CPUs. A no-change deploy used {cpu_first:.1f} CPU-seconds with {first} host(s) and "
        f"{cpu_last:.1f} with {last} (each host loads the app for the boot check and boots its new workers), "
        f"so {last} hosts cannot take less than {cpu_last / cores:.1f} s of wall time on {cores} CPUs; on "
        f"servers with CPUs of their own that work runs side by side, and the controller's part (one SSH "
        f"connection and about 20 commands per host, all hosts at once) grows little."
    )
