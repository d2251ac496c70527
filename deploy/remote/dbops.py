"""The database, from the migrations host, through a release's own code: its
revision, upgrade, downgrade and a pre-deploy backup. The DATABASE_URL comes
from the server's env file inside the remote shell, never from a command line."""
from __future__ import annotations

import json
import re

from .connection import Remote
from .layout import Layout

WITH_ENV = 'set -a && . "$1" && set +a && cd "$2" && shift 2 && exec "$@"'

BACKUP = """import hashlib, json, os, subprocess, sys, time
from urllib.parse import unquote, urlsplit
out, manifest_path, backup_id, revision, release = sys.argv[1:6]
url = urlsplit(os.environ.pop("DATABASE_URL"))
env = dict(os.environ, PGHOST=url.hostname or "", PGPORT=str(url.port or 5432),
           PGUSER=unquote(url.username or ""), PGPASSWORD=unquote(url.password or ""),
           PGDATABASE=url.path.lstrip("/"))
os.umask(0o077)
os.makedirs(os.path.dirname(out), mode=0o700, exist_ok=True)
started = time.time()
subprocess.run(["pg_dump", "--format=custom", "--file", out], env=env, check=True)
digest = hashlib.sha256()
with open(out, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
manifest = {"id": backup_id, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "database": env["PGDATABASE"], "revision": revision or None, "release": release,
            "format": "custom", "size": os.path.getsize(out), "sha256": digest.hexdigest(),
            "duration": round(time.time() - started, 3)}
with open(manifest_path, "w") as f:
    json.dump(manifest, f)
print(json.dumps(manifest))
"""


def in_release(remote: Remote, layout: Layout, release_id: str, argv: list[str], env: dict[str, str] | None = None,
               check: bool = True, timeout: float | None = None):
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return remote.run(["sh", "-c", WITH_ENV, "with-env", layout.env_file, layout.release(release_id),
                       "env", *extra, *argv], check=check, timeout=timeout)


def flask_db(remote: Remote, layout: Layout, release_id: str, app: str, *args: str, env: dict[str, str] | None = None,
             check: bool = True, timeout: float | None = None):
    return in_release(remote, layout, release_id, [".venv/bin/python", "-m", "flask", "--app", app, "db", *args],
                      env=env, check=check, timeout=timeout)


def current_revision(remote: Remote, layout: Layout, release_id: str, app: str) -> str | None:
    """The database's revision as `flask db current` reports it; None for a new database."""
    out = flask_db(remote, layout, release_id, app, "current")
    found = re.findall(r"^([0-9a-f]{6,})\b", out.stdout, re.M)
    return found[-1] if found else None


def backup(remote: Remote, layout: Layout, release_id: str, backup_id: str, revision: str | None) -> dict:
    out = f"{layout.backups}/{backup_id}.dump"
    result = in_release(remote, layout, release_id,
                        [".venv/bin/python", "-c", BACKUP, out, f"{layout.backups}/{backup_id}.json",
                         backup_id, revision or "", release_id], timeout=3600)
    return json.loads(result.stdout.strip().splitlines()[-1])
