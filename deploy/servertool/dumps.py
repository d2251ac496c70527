"""Backups on a server: a pg_dump and its manifest, checksums, a full read, a restore.

A backup `ID` is `backups/ID.dump` (a file in custom format, or a folder in
directory format) plus `backups/ID.json`, its manifest. Files are 0600 in the
0700 folder. A dump that fails leaves nothing behind.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time

from digests import checksums
from locks import held
from pgenv import SharedSnapshot, ToolError, facts, pg_env, psql
from unwritten import CONTENT, parse_content

FORMATS = ("directory", "custom")


def stamp(at: float | None = None) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(at))


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def dump_path(folder: str, backup_id: str) -> str:
    return f"{folder}/{backup_id}.dump"


def manifests(folder: str) -> list[dict]:
    """Every backup's manifest, oldest first, each with its last verification (or None)."""
    found = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        if path.endswith(".verify.json"):
            continue
        try:
            manifest = json.load(open(path))
            if not isinstance(manifest, dict) or "id" not in manifest:
                continue
            check = path[:-5] + ".verify.json"
            manifest["verified"] = json.load(open(check)) if os.path.exists(check) else None
            found.append(manifest)
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda m: (m.get("time", ""), m.get("id", "")))


def size_of(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))
    return os.path.getsize(path)


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def dump_options(fmt: str, compress: int, jobs: int) -> list[str]:
    if fmt not in FORMATS:
        raise ToolError(f"unknown dump format {fmt!r} (expected one of {', '.join(FORMATS)})")
    options = [f"--format={fmt}", f"--compress={compress}"]
    return options + [f"--jobs={jobs}"] if fmt == "directory" and jobs > 1 else options


def dump(folder: str, backup_id: str, release: str | None, label: str, fmt: str, compress: int, jobs: int,
         content: bool = False) -> dict:
    """pg_dump into backups/ID.dump and write the manifest; on any failure remove both.
    `content`: also keep each table's row digest (unwritten.py), the evidence a restore
    after a failed downgrade needs; a full read of every table, so only for pre-deploy backups."""
    os.umask(0o077)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    path, manifest_path = dump_path(folder, backup_id), f"{folder}/{backup_id}.json"
    if os.path.lexists(path) or os.path.lexists(manifest_path):
        raise ToolError(f"a backup {backup_id} already exists")
    options = dump_options(fmt, compress, jobs)
    with held(folder, "dump"):  # one dump at a time: a deploy's backup waits for the nightly one, not its migration
        return _dump(folder, backup_id, release, label, options, fmt, content, path, manifest_path)


def _dump(folder: str, backup_id: str, release: str | None, label: str, options: list[str], fmt: str,
          content: bool, path: str, manifest_path: str) -> dict:
    started = time.time()
    snapshot = dumping = None
    try:
        snapshot = SharedSnapshot(f"{folder}/.{backup_id}")
        dumping = subprocess.Popen(["pg_dump", *options, f"--snapshot={snapshot.id}", "--file", path],
                                   env=pg_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        snapshot.count(CONTENT if content else "")
        error = dumping.communicate()[1]
        if dumping.returncode != 0:
            raise ToolError(f"pg_dump failed: {error.strip()[-800:]}")
        version, revision, counts = snapshot.finish()
        digest, files = checksums(path)
        tool = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
        manifest = {"id": backup_id, "time": iso(started), "label": label or None, "database": pg_env().get("PGDATABASE", ""),
                    "server_version": version, "pg_dump_version": tool, "revision": revision,
                    "release": release or None, "format": fmt, "options": options, "size": size_of(path),
                    "sha256": digest, "duration": round(time.time() - started, 3), "row_counts": counts}
        if content:
            manifest["content"] = parse_content(snapshot.rows)
        if files:
            manifest["files"] = files
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
        return manifest
    except BaseException as exc:
        remove(path)
        remove(manifest_path)
        if isinstance(exc, OSError):
            raise ToolError(f"the backup failed and was removed: {exc}") from None
        raise
    finally:
        if dumping and dumping.poll() is None:
            dumping.kill()
            dumping.wait()
        if snapshot:
            snapshot.close()


def load_manifest(folder: str, backup_id: str) -> dict:
    try:
        return json.load(open(f"{folder}/{backup_id}.json"))
    except FileNotFoundError:
        raise ToolError(f"there is no backup {backup_id}") from None
    except ValueError as exc:
        raise ToolError(f"the manifest of {backup_id} is not valid JSON: {exc}") from None


def sha256_matches(folder: str, manifest: dict) -> tuple[bool, str]:
    """Whether the dump's sha256 is the manifest's; the detail names a missing or changed file."""
    path = dump_path(folder, manifest["id"])
    if not os.path.lexists(path):
        return False, f"{os.path.basename(path)} is missing"
    digest, files = checksums(path)
    if digest == manifest.get("sha256"):
        return True, f"sha256 {digest[:12]} as in the manifest"
    changed = sorted(n for n in set(files) | set(manifest.get("files", {}))
                     if files.get(n) != manifest.get("files", {}).get(n))
    return False, (f"sha256 {digest[:12]} is not the manifest's {str(manifest.get('sha256'))[:12]}"
                   + (f" (changed: {', '.join(changed[:5])})" if changed else ""))


def reads_completely(folder: str, backup_id: str) -> tuple[bool, str]:
    """pg_restore of the whole dump to /dev/null: every block is read and decompressed."""
    path = dump_path(folder, backup_id)
    if not os.path.lexists(path):
        return False, "the dump is missing"
    run = subprocess.run(["pg_restore", "--file=/dev/null", path], capture_output=True, text=True)
    if run.returncode != 0:
        return False, "pg_restore: " + (run.stderr.strip().splitlines() or ["failed"])[-1][:300]
    return True, "pg_restore read it completely"


def verify(folder: str, backup_id: str) -> dict:
    """The sha256 against the manifest, then a full read; the verdict is kept beside the backup."""
    manifest = load_manifest(folder, backup_id)
    sha_ok, sha_detail = sha256_matches(folder, manifest)
    result = {"id": backup_id, "time": iso(time.time()), "source": "verify", "sha256_ok": sha_ok,
              "sha256": sha_detail}
    if sha_ok:
        result["read_ok"], result["read"] = reads_completely(folder, backup_id)
    result["ok"] = sha_ok and result.get("read_ok", False)
    keep_verdict(folder, result)
    return result


def keep_verdict(folder: str, verdict: dict) -> None:
    old = os.umask(0o077)
    try:
        with open(f"{folder}/{verdict['id']}.verify.json", "w") as f:
            json.dump(verdict, f)
    finally:
        os.umask(old)


def restore(folder: str, backup_id: str, jobs: int, database: str | None = None) -> dict:
    """pg_restore into `database` (default: the app's), stopping at the first error; then the
    restored revision and row counts. What the database has and the dump does not (a table a
    later migration created, a foreign key into a dumped table) is dropped first: it would
    survive the restore, or make its --clean fail half-way."""
    path = dump_path(folder, backup_id)
    started = time.time()
    try:
        dropped = drop_what_the_dump_lacks(path, database)  # one transaction: all or nothing
    except ToolError as exc:
        return {"ok": False, "touched": False, "error": str(exc)}
    run = subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--exit-on-error",
                          f"--jobs={jobs}", "--dbname", pg_env(database).get("PGDATABASE", ""), path],
                         env=pg_env(database), capture_output=True, text=True)
    if run.returncode != 0:
        return {"ok": False, "touched": True, "error": run.stderr.strip()[-1500:], "dropped": dropped}
    duration = round(time.time() - started, 3)
    version, revision, counts = facts(database)
    return {"ok": True, "touched": True, "revision": revision, "row_counts": counts, "duration": duration,
            "dropped": dropped}


# The app's own objects (owned by its role, outside PostgreSQL's and extensions' schemas),
# each with the words pg_restore --list gives it: "<KIND> <schema> <name>".
OWN_OBJECTS = r"""
WITH me AS (
  SELECT oid FROM pg_roles WHERE rolname = current_user
), own_ns AS (
  SELECT oid, nspname, nspowner FROM pg_namespace
   WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
), not_extension AS (
  SELECT objid FROM pg_depend WHERE deptype = 'e'
)
SELECT 1, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                         WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, n.nspname, c.relname, ''
  FROM pg_class c JOIN own_ns n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relowner = (SELECT oid FROM me)
   AND c.oid NOT IN (SELECT objid FROM not_extension)
   AND NOT (c.relkind = 'S' AND EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                         AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT 0, 'FK CONSTRAINT', n.nspname, t.relname, con.conname
  FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid JOIN own_ns n ON n.oid = t.relnamespace
 WHERE con.contype = 'f' AND t.relowner = (SELECT oid FROM me)
UNION ALL
SELECT 2, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname, ''
  FROM pg_type t JOIN own_ns n ON n.oid = t.typnamespace
 WHERE t.typowner = (SELECT oid FROM me) AND t.oid NOT IN (SELECT objid FROM not_extension)
   AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
UNION ALL
SELECT 3, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, n.nspname, p.proname,
       oidvectortypes(p.proargtypes)
  FROM pg_proc p JOIN own_ns n ON n.oid = p.pronamespace
 WHERE p.proowner = (SELECT oid FROM me) AND p.prokind IN ('f', 'p')
   AND p.oid NOT IN (SELECT objid FROM not_extension)
UNION ALL
SELECT 4, 'SCHEMA', '-', nspname, '' FROM own_ns
 WHERE nspowner = (SELECT oid FROM me) AND nspname <> 'public'
ORDER BY 1;
"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _in_dump(toc: list[str], kind: str, schema: str, name: str, extra: str) -> bool:
    if kind == "FK CONSTRAINT":
        words = f"{kind} {schema} {name} {extra} "
    elif kind in ("FUNCTION", "PROCEDURE"):
        words = f"{kind} {schema} {name}({extra}) "
    else:
        words = f"{kind} {schema} {name} "
    return any(line.startswith(words) for line in toc)


def _drop(kind: str, schema: str, name: str, extra: str) -> str:
    if kind == "FK CONSTRAINT":
        return f"ALTER TABLE IF EXISTS {_ident(schema)}.{_ident(name)} DROP CONSTRAINT IF EXISTS {_ident(extra)};"
    if kind == "SCHEMA":
        return f"DROP SCHEMA IF EXISTS {_ident(name)} CASCADE;"
    target = f"{_ident(schema)}.{_ident(name)}" + (f"({extra})" if kind in ("FUNCTION", "PROCEDURE") else "")
    return f"DROP {kind} IF EXISTS {target} CASCADE;"


def drop_what_the_dump_lacks(path: str, database: str | None = None) -> list[str]:
    """In one transaction, drop the app's objects that the dump does not contain; their names."""
    listing = subprocess.run(["pg_restore", "--list", path], capture_output=True, text=True)
    if listing.returncode != 0:
        raise ToolError("pg_restore --list: " + (listing.stderr.strip().splitlines() or ["failed"])[-1][:300])
    toc = [line.split(" ", 3)[3] + " " for line in listing.stdout.splitlines()
           if line and not line.startswith(";") and line.count(" ") >= 3]
    extras = [row[1:] for row in psql(OWN_OBJECTS, database) if not _in_dump(toc, *row[1:])]
    if extras:
        psql("BEGIN;\n" + "\n".join(_drop(*row) for row in extras) + "\nCOMMIT;\n", database)
    return [_label(*row) for row in extras]


def _label(kind: str, schema: str, name: str, extra: str) -> str:
    if kind == "SCHEMA":
        return f"schema {name}"
    if kind in ("FUNCTION", "PROCEDURE"):
        return f"{kind.lower()} {schema}.{name}({extra})"
    return f"{kind.lower()} {schema}.{name}" + (f".{extra}" if extra else "")
