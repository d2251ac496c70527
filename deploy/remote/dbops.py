"""The database, from the migrations host, through a release's own code: its revision,
upgrade and downgrade. The DATABASE_URL comes from the server's env file inside the
remote shell, never from a command line."""
from __future__ import annotations

import re

from .connection import Remote
from .layout import Layout

WITH_ENV = 'set -a && . "$1" && set +a && cd "$2" && shift 2 && exec "$@"'


def in_release(remote: Remote, layout: Layout, release_id: str, argv: list[str], env: dict[str, str] | None = None,
               check: bool = True, timeout: float | None = None, input: str | None = None):
    """`argv` in the release's folder with the server's env file loaded (secrets stay on the server)."""
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return remote.run(["sh", "-c", WITH_ENV, "with-env", layout.env_file, layout.release(release_id),
                       "env", *extra, *argv], check=check, timeout=timeout, input=input)


def flask_db(remote: Remote, layout: Layout, release_id: str, app: str, *args: str, env: dict[str, str] | None = None,
             check: bool = True, timeout: float | None = None):
    return in_release(remote, layout, release_id, [".venv/bin/python", "-m", "flask", "--app", app, "db", *args],
                      env=env, check=check, timeout=timeout)


def current_revision(remote: Remote, layout: Layout, release_id: str, app: str) -> str | None:
    """The database's revision as `flask db current` reports it; None for a new database."""
    out = flask_db(remote, layout, release_id, app, "current")
    found = re.findall(r"^([0-9a-f]{6,})\b", out.stdout, re.M)
    return found[-1] if found else None
