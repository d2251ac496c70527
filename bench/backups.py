"""Backups on a generated database (issue: about 1 GB, realistic tables and indexes):
the project's backup against plain `pg_dump -Fc` in the same run, its verification,
and its parallel restore against a single-job `pg_restore`. Runs against the
sandbox (`inv sandbox.up`): the database lives on its db host, the dumps are taken
on app1 with the server-side tool, exactly as `fab backup` runs it."""
from __future__ import annotations

import json
import shlex
import statistics
import subprocess

from deploy.config import ProjectConfig
from deploy.ssh.dbops import LAUNCHER
from deploy.sandbox import dbhost, fleet
from deploy.sandbox.spec import Sandbox
from deploy.servertool import BOOT, ENTRY, sources

from .results import Measure, section, timed

TITLE = "Backups: the project's dump, verification and restore against plain pg_dump"
DATABASE, SCRATCH = "flask_deploy_bench", "flask_deploy_bench_restore"
ROOT = "/srv/app/bench"  # the tool's --deploy-to on app1: backups in ROOT/backups
# DATABASE_URL from the host's env file (read by the toolkit's launcher), pointed at another
# database of the same server.
RETARGET = 'DATABASE_URL="${DATABASE_URL%/*}/$1" && export DATABASE_URL && shift && exec "$@"'
PG_ENV = ("import subprocess, sys; sys.path.insert(0, sys.argv[1]); import pgenv; "
          "sys.exit(subprocess.run(sys.argv[2:], env=pgenv.pg_env()).returncode)")
GENERATE = """
SET ROLE app;
DROP TABLE IF EXISTS events, orders, users;
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, name text, created_at timestamptz NOT NULL, bio text);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL, total numeric(12,2), status text,
                     created_at timestamptz, note text);
CREATE TABLE events (id bigserial PRIMARY KEY, user_id bigint, kind text, payload jsonb, at timestamptz);
INSERT INTO users (email, name, created_at, bio)
  SELECT 'user' || g || '@example.com', 'User ' || md5(g::text), now() - g * interval '1 minute',
         repeat('lorem ipsum dolor sit amet ', g % 10) || md5(g::text)
  FROM generate_series(1, {users}) g;
INSERT INTO orders (user_id, total, status, created_at, note)
  SELECT g % {users} + 1, (g % 10000) / 3.0, (ARRAY['new', 'paid', 'shipped', 'cancelled'])[g % 4 + 1],
         now() - g * interval '1 second', CASE WHEN g % 3 = 0 THEN 'gift wrap, deliver after ' || g % 12 || ' pm' END
  FROM generate_series(1, {orders}) g;
INSERT INTO events (user_id, kind, payload, at)
  SELECT g % {users} + 1, (ARRAY['login', 'view', 'click', 'purchase', 'logout'])[g % 5 + 1],
         jsonb_build_object('page', '/items/' || g % 5000, 'ms', g % 900,
                            'agent', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/' || g % 120, 'ref', md5((g / 7)::text)),
         now() - g * interval '1 second'
  FROM generate_series(1, {events}) g;
CREATE INDEX ON orders (user_id);
CREATE INDEX ON events (user_id, at);
CREATE INDEX ON users (email);
VACUUM ANALYZE;
SELECT pg_database_size(current_database());
"""


def generate(db, size_mb: int) -> int:
    """A fresh bench database of about `size_mb` (816 MB per 400k users, 1.5M orders, 2M events)."""
    scale = size_mb / 816
    dbhost.psql(db, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE); CREATE DATABASE {DATABASE} OWNER app;")
    sql = GENERATE.format(users=max(100, int(400_000 * scale)), orders=max(300, int(1_500_000 * scale)),
                          events=max(400, int(2_000_000 * scale)))
    return int(dbhost.psql(db, sql, DATABASE).split()[-1])


def on_app1(sandbox, argv: list[str], database: str = DATABASE, input: str | None = None) -> str:
    """`argv` on app1 as the deploy user, with DATABASE_URL pointed at `database`."""
    command = shlex.join(["python3", "-c", LAUNCHER, "/srv/app/shared/env", "/", "sh", "-c", RETARGET, "retarget",
                          database, *argv])
    run = subprocess.run(["ssh", "-F", str(sandbox.ssh_config), "app1", command], input=input,
                         capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"on app1: {argv[0]} exited {run.returncode}: {run.stderr.strip()[-500:]}")
    return run.stdout


def tool(sandbox, *args: str, database: str = DATABASE) -> dict:
    out = on_app1(sandbox, ["python3", "-c", BOOT, f"{ROOT}/tools", ENTRY, "--deploy-to", ROOT, *args],
                  database, input=sources())
    return json.loads(out.strip().splitlines()[-1])


def pg(sandbox, *argv: str, database: str = DATABASE) -> None:
    """A PostgreSQL client program with the password in its environment (the tool's pgenv)."""
    on_app1(sandbox, ["python3", "-c", PG_ENV, f"{ROOT}/tools", *argv], database)


def fresh_scratch(db) -> None:
    dbhost.psql(db, f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE); CREATE DATABASE {SCRATCH} OWNER app;")


def one_run(sandbox, db, run: int) -> dict[str, float]:
    """Both dumps, the verification and both restores, once; seconds and bytes."""
    backup_id = f"20260101{run:06d}-bench"
    on_app1(sandbox, ["rm", "-rf", f"{ROOT}/backups", f"{ROOT}/plain.dump", f"{ROOT}/alone.dump"])
    got: dict[str, float] = {}
    manifest: dict = {}

    def ours() -> None:
        manifest.update(tool(sandbox, "dump", "--id", backup_id, "--label", "bench", "--format", "directory",
                             "--compress", "4", "--jobs", "2"))
    got["dump"] = timed(ours)
    got["plain"] = timed(lambda: pg(sandbox, "pg_dump", "--format=custom", "--file", f"{ROOT}/plain.dump"))
    got["alone"] = timed(lambda: pg(sandbox, "pg_dump", "--format=directory", "--compress=4", "--jobs=2",
                                    "--file", f"{ROOT}/alone.dump"))
    got["size"] = manifest["size"]
    got["plain_size"] = int(on_app1(sandbox, ["stat", "-c", "%s", f"{ROOT}/plain.dump"]))
    got["verify"] = timed(lambda: tool(sandbox, "verify", backup_id))
    fresh_scratch(db)
    got["restore"] = timed(lambda: tool(sandbox, "restore", backup_id, "--jobs", "2", database=SCRATCH))
    fresh_scratch(db)
    got["plain_restore"] = timed(lambda: pg(sandbox, "pg_restore", "--no-owner", "--exit-on-error", "--jobs=1",
                                            "--dbname", SCRATCH, f"{ROOT}/plain.dump", database=SCRATCH))
    return got


def bench_backups(project: ProjectConfig, runs: int, size: int = 1000, sandbox: Sandbox | None = None) -> str:
    """Time `runs` rounds on a generated database of about `size` MB; return the section.
    `sandbox`: the one to use (default: the project's, brought up if needed)."""
    size_mb = size
    if sandbox is None:
        sandbox = fleet.sandbox_for(project)
        fleet.up(sandbox, project.root)
    db = sandbox.db
    actual = generate(db, size_mb)
    try:
        rounds = [one_run(sandbox, db, i) for i in range(runs)]
    finally:
        dbhost.psql(db, f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE); DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE);")
        on_app1(sandbox, ["rm", "-rf", ROOT], "postgres")

    def column(key: str) -> list[float]:
        return [r[key] for r in rounds]

    def ratio(a: str, b: str) -> list[float]:
        return [round(r[a] / r[b], 2) for r in rounds]

    measures = [
        Measure("project backup: pg_dump -Fd -j2 -Z4 + manifest (row counts, sha256)", column("dump")),
        Measure("plain pg_dump -Fc (default gzip 6)", column("plain")),
        Measure("speed: plain time / project time", ratio("plain", "dump"), ">= 1.8", unit="×"),
        Measure("the same pg_dump -Fd -j2 -Z4 alone (no row counts, no checksum)", column("alone")),
        Measure("speed: plain time / that pg_dump alone", ratio("plain", "alone"), unit="×"),
        Measure("size: project / plain", ratio("size", "plain_size"), "<= 1.05", unit="×"),
        Measure("verification (sha256 + full read) / project backup time", ratio("verify", "dump"), "< 1", unit="×"),
        Measure("project restore (pg_restore -j2, then row counts)", column("restore")),
        Measure("single-job pg_restore of the plain dump", column("plain_restore")),
        Measure("restore speed: single-job time / project time", ratio("plain_restore", "restore"), "> 1", unit="×"),
    ]
    notes = (f"Database: {actual / 2**20:.0f} MB (users, orders, events with jsonb; 3 secondary indexes), on the "
             f"sandbox's db host; dumps taken on app1 over the sandbox network, as `fab backup` takes them. "
             f"Project dump size: {statistics.median(column('size')) / 2**20:.1f} MB; plain: "
             f"{statistics.median(column('plain_size')) / 2**20:.1f} MB. Both restores include building the indexes. "
             "Why the speed target is missed: compare the project's backup with the same pg_dump alone: the "
             "manifest (exact row counts in pg_dump's own snapshot, counted while it dumps, and the sha256) costs "
             "little; the floor is the parallel dump itself. On this machine the database server and pg_dump's two "
             "workers share the same 2 cores, and the largest table (events, about half the data) is dumped by one "
             "worker, so two jobs cannot halve the time. A server with more cores, or data spread over more "
             "tables, gains more; `backups.jobs` sets the number of jobs.")

    return section(TITLE, f"about {size_mb} MB, {runs} runs", measures, notes)
