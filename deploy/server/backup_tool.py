"""Server side of backups: dump, verify, restore. Run as `python - COMMAND ARGS` with
DATABASE_URL in the environment (from the server's env file); prints JSON.

The password reaches pg_dump/pg_restore/psycopg2 through PGPASSWORD in their
environment, never through a command line.
"""
import hashlib
import json
import os
import subprocess
import sys
import time
from urllib.parse import unquote, urlsplit

import psycopg2

URL = urlsplit(os.environ.pop("DATABASE_URL", ""))
PGENV = dict(os.environ, PGHOST=URL.hostname or "", PGPORT=str(URL.port or 5432),
             PGUSER=unquote(URL.username or ""), PGPASSWORD=unquote(URL.password or ""),
             PGDATABASE=URL.path.lstrip("/"))
DUMP_OPTIONS = ["--format=custom", "--compress=1"]


def connect(database=None):
    return psycopg2.connect(host=PGENV["PGHOST"], port=PGENV["PGPORT"], user=PGENV["PGUSER"],
                            password=PGENV["PGPASSWORD"], dbname=database or PGENV["PGDATABASE"], connect_timeout=5)


def facts():
    """Server version, Alembic revision and exact row counts of every table."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
        revision = None
        if cur.fetchone()[0]:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
            revision = row[0] if row else None
        cur.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2")
        counts = {}
        for schema, table in cur.fetchall():
            cur.execute(f'SELECT count(*) FROM "{schema}"."{table}"')
            counts[f"{schema}.{table}"] = cur.fetchone()[0]
    return version, revision, counts


def writes():
    """Rows inserted, updated or deleted in the app's tables so far (the statistics' counters;
    alembic_version is left out: a migration writes it, the app does not)."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
                    "WHERE relname <> 'alembic_version'")
        return int(cur.fetchone()[0])


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dump(folder, backup_id, release, label):
    os.umask(0o077)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    path, manifest_path = f"{folder}/{backup_id}.dump", f"{folder}/{backup_id}.json"
    started = time.time()
    version, revision, counts = facts()
    written = writes()
    subprocess.run(["pg_dump", *DUMP_OPTIONS, "--file", path], env=PGENV, check=True)
    tool = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
    manifest = {"id": backup_id, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "label": label or None, "database": PGENV["PGDATABASE"], "server_version": version,
                "pg_dump_version": tool, "revision": revision, "release": release or None,
                "format": "custom", "options": DUMP_OPTIONS, "size": os.path.getsize(path),
                "sha256": sha256(path), "duration": round(time.time() - started, 3), "row_counts": counts,
                "writes": written}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    return manifest


def verify(folder, backup_id):
    """The sha256 against the manifest, then a full read of the dump (pg_restore to /dev/null)."""
    manifest = json.load(open(f"{folder}/{backup_id}.json"))
    path = f"{folder}/{backup_id}.dump"
    result = {"id": backup_id, "sha256_ok": sha256(path) == manifest["sha256"]}
    if result["sha256_ok"]:
        read = subprocess.run(["pg_restore", "--file=/dev/null", path], capture_output=True, text=True)
        result["read_ok"] = read.returncode == 0
        result["read_error"] = read.stderr.strip()[-500:] or None
    result["ok"] = result["sha256_ok"] and result.get("read_ok", False)
    return result


def restore(folder, backup_id, jobs):
    """Drop and recreate the app's objects from the dump, stopping at the first error."""
    path = f"{folder}/{backup_id}.dump"
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND usename = current_user")
    started = time.time()
    run = subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--exit-on-error",
                          f"--jobs={jobs}", "--dbname", PGENV["PGDATABASE"], path],
                         env=PGENV, capture_output=True, text=True)
    if run.returncode != 0:
        return {"ok": False, "error": run.stderr.strip()[-1500:]}
    version, revision, counts = facts()
    return {"ok": True, "revision": revision, "row_counts": counts, "duration": round(time.time() - started, 3)}


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    result = {"dump": lambda: dump(*args), "verify": lambda: verify(*args), "writes": lambda: {"writes": writes()},
              "restore": lambda: restore(args[0], args[1], int(args[2]))}[command]()
    print(json.dumps(result))
