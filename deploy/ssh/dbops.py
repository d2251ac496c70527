"""The database, from the migrations host: its revision, and upgrade and downgrade
through a release's own code. The DATABASE_URL comes from the server's env file, read on
the server as systemd reads it (deploy/servertool/envfile.py), never from a command line and
never through a shell."""
from __future__ import annotations

from pathlib import Path

from ..errors import DeployError
from ..servertool import envfile
from . import server_tools
from .connection import Remote
from .layout import Layout

LAUNCHER = Path(envfile.__file__).read_text()  # run as `python3 -c`: the same parser as the backup tool's


def in_release(remote: Remote, layout: Layout, release_id: str, argv: list[str], env: dict[str, str] | None = None,
               check: bool = True, timeout: float | None = None, input: str | None = None,
               env_file: str | None = None):
    """`argv` in the release's folder with the server's env file (or `env_file`) loaded (secrets stay
    on the server), and the toolkit's runtime (.deploy/) importable, as the project's env.py expects.
    Flask's CLI reads no .flaskenv or .env there: the migration sees exactly the settings the app's
    workers get from the unit (a FLASK_CONFIG in .flaskenv would migrate one database and serve another)."""
    env = {"PYTHONPATH": f"{layout.release(release_id)}/.deploy", "FLASK_SKIP_DOTENV": "1", **(env or {})}
    extra = [f"{k}={v}" for k, v in env.items()]
    return remote.run(["python3", "-c", LAUNCHER, env_file or layout.env_file, layout.release(release_id),
                       "env", *extra, *argv], check=check, timeout=timeout, input=input)


def migration_env(stage) -> dict[str, str]:
    """The stage's timeouts for a migration, as env.py's migration_connection reads them."""
    return {"MIGRATION_LOCK_TIMEOUT": stage.lock_timeout, "MIGRATION_STATEMENT_TIMEOUT": stage.statement_timeout}


def flask_db(remote: Remote, layout: Layout, release_id: str, app: str, *args: str, env: dict[str, str] | None = None,
             check: bool = True, timeout: float | None = None):
    return in_release(remote, layout, release_id, [".venv/bin/python", "-m", "flask", "--app", app, "db", *args],
                      env=env, check=check, timeout=timeout)


def current_revision(remote: Remote, layout: Layout) -> str | None:
    """The database's revision (its alembic_version row, read by the server tool without
    loading the app); None for a new database."""
    return revision_and_writers(remote, layout)[0]


def revision_and_writers(remote: Remote, layout: Layout) -> tuple[str | None, list[int]]:
    """The revision, and the transaction(s) that wrote it: right after an upgrade, the migration's."""
    facts = database_facts(remote, layout)
    return facts["revision"], facts["xids"]


def database_facts(remote: Remote, layout: Layout) -> dict:
    """In one tool run: the revision (one head), the xids that wrote it, the server's version
    and the host's pg_dump and pg_restore versions."""
    facts = server_tools.tool(remote, layout, "revision")
    found = facts["revisions"]
    if len(found) > 1:
        raise DeployError(f"the database has several revisions ({', '.join(found)}); this toolkit deploys one head",
                          hint="merge the heads (flask db merge) and deploy that")
    return {**facts, "revision": found[0] if found else None, "xids": facts.get("xids", [])}


def old_clients(facts: dict) -> list[str]:
    """pg_dump/pg_restore older than the server (they refuse to dump it, or restore it wrongly)."""
    server = facts.get("server_version_num", 0) // 10000
    problems = []
    for program in ("pg_dump", "pg_restore"):
        version = facts.get(program)
        major = int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else 0
        fix = f"(apt install postgresql-client-{server}, from the PostgreSQL apt repository if needed)"
        if not version:
            problems.append(f"{program} is missing {fix}")
        elif major < server:
            problems.append(f"{program} is {version}, older than the server's PostgreSQL {server} {fix}")
    return problems
