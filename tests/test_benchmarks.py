"""Smoke runs of the deploy benchmarks (one run, the smallest size), so that they keep
working; the full runs are `inv bench`, not part of the tests. Each brings up a sandbox
of its own beside the tests' fleet and takes it down again."""
from __future__ import annotations

import re
import subprocess

import pytest

from bench import runner as bench_runner
from bench.project import PREFIX
from deploy.config import load_project

# One at a time (their sandboxes share a prefix), in one xdist worker, beside the fleets' tests.
pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("bench-sandbox")]


def rows(text: str) -> dict[str, list[str]]:
    """The results table: measure -> its cells (median, min, max, runs, target)."""
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] != "measure":
            found[cells[0]] = cells[1:]
    return found


def median(cell: str) -> float:
    return float(re.match(r"[\d.]+", cell).group())


def run_smoke(tmp_path, name: str, size: int) -> dict[str, list[str]]:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- bench:other -->\nkept\n<!-- /bench:other -->\n")
    bench_runner.run(load_project(), name, 1, results, size=size)
    text = results.read_text()
    assert "kept" in text and f"<!-- bench:{name} -->" in text
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{PREFIX}-" not in netns, netns  # its sandbox is gone
    return rows(text)


def test_deploy_time_smoke_run_times_both_deploys_and_the_naive_fabfile_and_counts_commands(tmp_path):
    table = run_smoke(tmp_path, "deploy_time", 1)
    for name in ("1 host(s): no-change deploy", "1 host(s): code-change deploy",
                 "1 host(s): naive fabfile, code change", "1 host(s), no-change: step switch"):
        assert median(table[name][0]) > 0 and table[name][3] == "1", (name, table[name])
    commands = median(table["1 host(s): SSH commands on app1 (migrations host), no-change"][0])
    assert 5 < commands < 60


def test_rollback_smoke_run_times_a_code_and_a_database_rollback(tmp_path):
    table = run_smoke(tmp_path, "rollback", 1)
    code = median(table["1 host(s): code rollback (switch back, reload, healthy)"][0])
    database = median(table["1 host(s): code and database rollback (+ flask db downgrade)"][0])
    assert 0 < code < 30 and 0 < database < 60
    assert 0 < median(table["worker boot: import the app and create it (app1)"][0]) < 10


def test_zero_downtime_smoke_run_drops_no_request_during_deploys_while_plain_restarts_do(tmp_path):
    table = run_smoke(tmp_path, "zero_downtime", 3)  # no change, a code change, a dependency change
    assert median(table["during 3 deploys: requests"][0]) > 300
    assert table["during 3 deploys: failed (connection errors and 5xx)"][0] == "0 req"
    # The same client sees the refused connections of plain restarts: it can tell a failure.
    assert median(table["during 3 plain restarts: failed"][0]) > 0
    assert "p99 during the dependency change deploys" in table


def test_predeploy_smoke_run_times_both_engines_safety_steps_and_their_restores(tmp_path):
    table = run_smoke(tmp_path, "predeploy", 30)
    size = next(name.split(":")[0] for name in table if "pgbackrest pre-deploy restore point" in name)
    for measure in ("pgdump pre-deploy backup", "pgbackrest pre-deploy restore point", "pgdump restore of that backup",
                    "pgbackrest restore to that point", "pgbackrest full backup"):
        name = next(n for n in table if n.startswith(f"{size}: {measure}"))
        assert median(table[name][0]) > 0 and table[name][3] == "1", (name, table[name])
