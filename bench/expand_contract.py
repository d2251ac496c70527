"""The worked example of docs/expand-contract.md (bench/rename_example.py): `cards.title`
renamed to `cards.name` in three deploys, while an open-loop client reads the board's
cards (their title, read from `title` and then from `name`) through the sandbox's HAProxy.
Per step: the deploy's wall time, its migration, the post phase, and the requests during
the deploy (failed ones, p99)."""
from __future__ import annotations

import json
import time

from deploy.config import ProjectConfig
from deploy.sandbox import dbhost, lbhost

from .load import Load, summarize
from .project import BenchError, BenchProject
from .rename_example import SAFE_RENAME, Step
from .results import Measure, section

TITLE = "A column renamed in three deploys under load (expand, backfill, contract)"
RATE = 50  # reads a second per app host
SETTLE_SECONDS = 1
READ_CARDS = 10


def bench_expand_contract(project: ProjectConfig, runs: int, size: int = 20000) -> str:
    """`runs` times, on a fresh fleet: `size` cards to backfill, then the three deploys under load."""
    got: dict[str, dict[str, list[float]]] = {s.title: {} for s in SAFE_RENAME}
    for _ in range(runs):
        with BenchProject(project.root, 2) as bench:
            bench.fab("deploy")
            lbhost.wait_in_rotation(bench.sandbox.lb)
            url = bench.sandbox.lb_url + f"boards/{_seed(bench, size)}/cards"
            with Load([url], RATE * len(bench.sandbox.apps)) as load:
                for step in SAFE_RENAME:
                    for name, value in _deploy_step(bench, load, step).items():
                        got[step.title].setdefault(name, []).append(value)
    return _section(got, runs, size)


def _seed(bench: BenchProject, cards: int) -> str:
    """A board of `cards` cards (what the backfill copies), and the id of a board of READ_CARDS
    that the load reads."""
    sql = (f"WITH b AS (INSERT INTO boards (name) VALUES ('backfilled') RETURNING id) "
           f"INSERT INTO cards (board_id, title) SELECT b.id, 'card ' || g FROM b, generate_series(1, {cards}) g;\n"
           f"WITH b AS (INSERT INTO boards (name) VALUES ('read') RETURNING id) "
           f"INSERT INTO cards (board_id, title) SELECT b.id, 'card ' || g FROM b, generate_series(1, {READ_CARDS}) g;\n"
           "SELECT id FROM boards WHERE name = 'read';")
    return dbhost.psql(bench.sandbox.db, sql, dbhost.DATABASE).split()[-1]


def _deploy_step(bench: BenchProject, load: Load, step: Step) -> dict[str, float]:
    for path, old, new in step.edits:
        bench._edit(path, old, new)
    (bench.root / "migrations" / "versions" / step.filename).write_text(step.migration)
    bench.commit(step.title)
    began = time.monotonic()
    run = bench.fab("deploy")
    time.sleep(SETTLE_SECONDS)
    during = summarize(load.between(began, time.monotonic()))
    log = [json.loads(line) for line in bench.ssh("app1", "tail -2 /srv/app/deploy.log").stdout.splitlines()]
    deploy = next(e for e in log if e["action"] == "deploy")
    post = next((e for e in log if e["action"] == "migrate-post"), None)
    if during.failed:
        raise BenchError(f"{step.title}: {during.failed} request(s) failed during the deploy: {during.kinds}")
    return {"deploy": run.seconds, "migrate": deploy["timings"].get("migrate", 0.0),
            "post": post["seconds"] if post else 0.0, "requests": during.requests,
            "failed": during.failed, "p99": during.p99}


def _section(got: dict[str, dict[str, list[float]]], runs: int, size: int) -> str:
    measures = []
    for title, values in got.items():
        measures += [Measure(f"{title}: fab deploy", values["deploy"]),
                     Measure(f"{title}: its pre revision (migrate step)", values["migrate"]),
                     Measure(f"{title}: its post revision (after the switch)", values["post"]),
                     Measure(f"{title}: requests during the deploy", values["requests"], unit=""),
                     Measure(f"{title}: failed requests", values["failed"], "0", unit=""),
                     Measure(f"{title}: p99 latency during the deploy", values["p99"])]
    settings = f"{runs} run(s), each on a fresh 2-host fleet; {size} cards; {RATE} reads/s per app host through HAProxy"
    notes = ("The reads list the board's cards (each card's title comes from `title` until step 2, from `name` "
             "after). Step 2's backfill is one UPDATE of every card; a large table wants it batched "
             "(docs/expand-contract.md). Step 3 runs no pre revision: its drop runs after the switch.")
    return section(TITLE, settings, measures, notes)
