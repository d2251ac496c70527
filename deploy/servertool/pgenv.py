"""The stage's database, seen from a server: DATABASE_URL (from the env file) turned
into PG* variables for psql, pg_dump and pg_restore, so that the password never
appears on a command line. Standard library only: it runs with the system python3.
"""
from __future__ import annotations

import os
import subprocess
import time
from urllib.parse import parse_qsl, unquote, urlsplit


class ToolError(Exception):
    """An expected failure, reported as {"ok": false, "error": ...}."""


# DATABASE_URL's query parameters, as libpq's environment variables (libpq reads no URL from
# the environment, and a URL on a command line would show its password).
LIBPQ_VARIABLES = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
    "password": "PGPASSWORD", "passfile": "PGPASSFILE", "service": "PGSERVICE", "options": "PGOPTIONS",
    "application_name": "PGAPPNAME", "connect_timeout": "PGCONNECT_TIMEOUT", "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "sslcrldir": "PGSSLCRLDIR", "sslsni": "PGSSLSNI", "sslcompression": "PGSSLCOMPRESSION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION", "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE", "krbsrvname": "PGKRBSRVNAME", "channel_binding": "PGCHANNELBINDING",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "load_balance_hosts": "PGLOADBALANCEHOSTS",
}


def url_variables(raw: str) -> dict[str, str]:
    """libpq's variables for a postgresql:// URL (SQLAlchemy's postgresql+driver:// too): its
    parts and every query parameter libpq knows; an unknown one is refused, not dropped."""
    url = urlsplit(raw)
    if url.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ToolError(f"DATABASE_URL is not a postgresql:// URL (its scheme is {url.scheme!r})")
    try:
        port = url.port or 5432
    except ValueError:
        raise ToolError("DATABASE_URL has a port that is not a number") from None
    found = {"PGHOST": url.hostname or "", "PGPORT": str(port), "PGUSER": unquote(url.username or ""),
             "PGPASSWORD": unquote(url.password or ""), "PGDATABASE": unquote(url.path.lstrip("/")),
             "PGCONNECT_TIMEOUT": "5"}
    for name, value in parse_qsl(url.query, keep_blank_values=True):
        if name not in LIBPQ_VARIABLES:
            raise ToolError(f"DATABASE_URL has the parameter {name!r}, which PostgreSQL's programs do not know")
        found[LIBPQ_VARIABLES[name]] = value
    return {k: v for k, v in found.items() if v or k == "PGPASSWORD"}


def pg_env(database: str | None = None) -> dict[str, str]:
    """The environment for PostgreSQL's client programs, from DATABASE_URL."""
    raw = os.environ.get("DATABASE_URL", "")
    if not raw:
        raise ToolError("DATABASE_URL is not set (it comes from the server's shared/env file)")
    env = dict(os.environ, **url_variables(raw))
    if database:
        env["PGDATABASE"] = database
    env.pop("DATABASE_URL")
    return env


def database_name() -> str:
    return pg_env().get("PGDATABASE", "")


# Unaligned, tuples only, tab-separated, stop at the first error: rows a program can split.
PSQL = ["psql", "-X", "-A", "-t", "-q", "-F", "\t", "-v", "ON_ERROR_STOP=1"]


def psql(script: str, database: str | None = None) -> list[list[str]]:
    """Run `script` (SQL and psql meta-commands) and return the output rows, split on tabs."""
    run = subprocess.run([*PSQL, "-f", "-"],
                         input=script, env=pg_env(database), capture_output=True, text=True)
    if run.returncode != 0:
        raise ToolError(f"psql: {run.stderr.strip()[-800:]}")
    return [line.split("\t") for line in run.stdout.splitlines() if line]


FACTS = r"""
SELECT 'version', current_setting('server_version');
SELECT 'SELECT ''revision'', version_num FROM alembic_version'
 WHERE to_regclass('alembic_version') IS NOT NULL
\gexec
SELECT format('SELECT %L, %L, count(*) FROM %I.%I', 'count', schemaname || '.' || tablename, schemaname, tablename)
  FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY schemaname, tablename
\gexec
"""


def parse_facts(rows: list[list[str]]) -> tuple[str, str | None, dict[str, int]]:
    version, revision, counts = "", None, {}
    for row in rows:
        if row[0] == "version":
            version = row[1]
        elif row[0] == "revision":
            revision = row[1]
        elif row[0] == "count":
            counts[row[1]] = int(row[2])
    return version, revision, counts


def facts(database: str | None = None) -> tuple[str, str | None, dict[str, int]]:
    """Server version, Alembic revision and exact row counts of every table."""
    return parse_facts(psql(FACTS, database))


class SharedSnapshot:
    """A REPEATABLE READ transaction whose snapshot pg_dump uses too (`--snapshot`): the facts
    counted in it are exactly the dump's, even while the app writes, and they are counted
    while pg_dump runs rather than before it. Files in `scratch` carry psql's answers."""

    def __init__(self, scratch: str) -> None:
        self.snapshot_file, self.facts_file = f"{scratch}.snapshot", f"{scratch}.facts"
        self.proc = subprocess.Popen(PSQL,
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=pg_env(), text=True)
        self._send("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
                   f"\\o {self.snapshot_file}\nSELECT pg_export_snapshot();\n\\o /dev/null\n")
        self.id = self._wait_for(self.snapshot_file)

    def _send(self, text: str) -> None:
        try:
            self.proc.stdin.write(text)
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ToolError(f"psql: {self.proc.stderr.read().strip()[-800:]}") from None

    def _wait_for(self, path: str) -> str:
        """psql closes an \\o file when the next \\o opens: then it is complete."""
        while self.proc.poll() is None:
            if os.path.exists(path) and os.path.getsize(path):
                with open(path) as f:
                    text = f.read()
                if text.endswith("\n"):
                    return text.strip()
            time.sleep(0.01)
        raise ToolError(f"psql: {self.proc.stderr.read().strip()[-800:]}")

    def count(self, more: str = "") -> None:
        """Start counting (in the shared snapshot), then run `more` there too; `finish` collects the answer."""
        self._send(f"\\o {self.facts_file}\n{FACTS}\n{more}\n\\o /dev/null\n")

    def finish(self) -> tuple[str, str | None, dict[str, int]]:
        """End the transaction (after pg_dump is done with the snapshot) and return the facts."""
        self._send("COMMIT;\n\\q\n")
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise ToolError(f"psql: {self.proc.stderr.read().strip()[-800:]}")
        with open(self.facts_file) as f:
            self.rows = [line.split("\t") for line in f.read().splitlines() if line]
        return parse_facts(self.rows)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for path in (self.snapshot_file, self.facts_file):
            if os.path.exists(path):
                os.unlink(path)


REVISIONS = r"""
SELECT 'SELECT version_num FROM alembic_version ORDER BY 1' WHERE to_regclass('alembic_version') IS NOT NULL
\gexec
"""


def revisions() -> list[str]:
    """The Alembic revision(s) in alembic_version; none for a database without that table."""
    return [row[0] for row in psql(REVISIONS)]


def table_count() -> int:
    """How many tables the database has outside PostgreSQL's own schemas: 0 for an empty one."""
    rows = psql("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%';")
    return int(rows[0][0])


def revision_xids() -> list[int]:
    """The transaction(s) that last wrote alembic_version: after an upgrade, the migration's own."""
    rows = psql("SELECT 'SELECT xmin FROM alembic_version' WHERE to_regclass('alembic_version') IS NOT NULL\n\\gexec\n")
    return [int(row[0]) for row in rows]


def end_sessions_holding(advisory_key: int) -> list[int]:
    """Terminate the sessions holding this advisory lock (a migration whose client was
    killed keeps its transaction, and its locks, until it next talks to the client)."""
    high, low = advisory_key >> 32, advisory_key & 0xFFFFFFFF
    holders = (f"FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = {high} AND objid = {low} "
               f"AND objsubid = 1 AND pid <> pg_backend_pid()")
    if server_version_num() >= 140000:  # waits for each to be gone (PostgreSQL 14+)
        return [int(row[0]) for row in psql(f"SELECT pid, pg_terminate_backend(pid, 5000) {holders};")]
    ended = [int(row[0]) for row in psql(f"SELECT pid, pg_terminate_backend(pid) {holders};")]
    _wait_gone(ended)
    return ended


def _wait_gone(pids: list[int], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while pids and time.monotonic() < deadline:
        listed = ", ".join(map(str, pids))
        if not psql(f"SELECT 1 FROM pg_stat_activity WHERE pid IN ({listed});"):
            return
        time.sleep(0.1)


_VERSION: list[int] = []


def server_version_num() -> int:
    """The server's version (150018 for 15.18), asked once per run."""
    if not _VERSION:
        _VERSION.append(int(psql("SELECT current_setting('server_version_num');")[0][0]))
    return _VERSION[0]


def ident(name: str) -> str:
    """A quoted SQL identifier (any name a server returns, quotes included)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_database(name: str) -> None:
    psql(f"CREATE DATABASE {ident(name)};", "postgres")


def drop_database(name: str) -> None:
    if server_version_num() >= 130000:
        psql(f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE);", "postgres")
        return
    ended = [int(row[0]) for row in psql(  # before 13: end its sessions first (the app role's own)
        f"SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {literal(name)};", "postgres")]
    _wait_gone(ended)
    psql(f"DROP DATABASE IF EXISTS {ident(name)};", "postgres")


def databases_starting(prefix: str) -> list[str]:
    """Databases whose name starts with `prefix` (letters, digits and '_' only)."""
    rows = psql(f"SELECT datname FROM pg_database WHERE left(datname, {len(prefix)}) = {literal(prefix)};", "postgres")
    return [row[0] for row in rows]
