"""The pgbackrest engine's check, on the repository host: the newest backup's age and size,
the WAL archive (working now, and no segment missing since the oldest backup), pgBackRest's
`verify` of every file's checksum, and now and then a real restore of the newest backup into a
scratch cluster. The report has the pgdump check's shape, so the table, the JSON, the exit
status and the Prometheus textfile are the same. Standard library only.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import time

import pgbr
from checks import CRITICAL, OK, Limits, check_age, check_size, restore_check, result, verdict
from locks import held
from pgenv import ToolError

SCRATCH = "scratch-"
BOOTSTRAP_ROLE = "postgres"  # the superuser of a cluster Debian made (initdb as the postgres user)
SETTINGS = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_xacts",
            "max_locks_per_xact")
CONTROLDATA_NAMES = {"max_prepared_xacts": "max_prepared_transactions", "max_locks_per_xact":
                     "max_locks_per_transaction"}


def check_archive(deploy_to: str, stanza: str, oldest: dict) -> dict:
    """Archiving works now, and every WAL file since the oldest backup's start is in the repository."""
    try:
        pgbr.pgbackrest(deploy_to, stanza, "check")
    except ToolError as exc:
        return result("archive", CRITICAL, f"WAL archiving is broken: {exc}")
    missing = pgbr.missing_segments(pgbr.archived_segments(deploy_to, stanza), oldest["wal_start"])
    if missing:
        return result("archive", CRITICAL, f"{len(missing)} WAL file(s) missing from the archive, first "
                                           f"{missing[0]}: no point in time after it can be restored",
                      missing=missing[:20])
    return result("archive", OK, f"archiving works; WAL continuous since {oldest['wal_start']}")


def check_verify(deploy_to: str, stanza: str) -> dict:
    """`pgbackrest verify`: every backup file and WAL file against its checksum (it exits 0 either way;
    its verdict is in its report)."""
    try:
        done = pgbr.pgbackrest(deploy_to, stanza, "--log-level-console=info", "verify", timeout=6 * 3600)
    except ToolError as exc:
        return result("verify", CRITICAL, str(exc))
    text = done.stdout + done.stderr
    if re.search(r"status:\s*error", text):
        details = [line.strip() for line in text.splitlines()
                   if re.search(r"invalid|missing|other|checksum|size|error", line) and "command" not in line]
        return result("verify", CRITICAL, "pgbackrest verify found damaged files: " + "; ".join(details[:4])[:400])
    return result("verify", OK, "every backup and WAL file matches its checksum")


def run(deploy_to: str, stanza: str, history_folder: str, limits: Limits, restore_test: bool | None,
        now: float | None = None) -> dict:
    """All checks; `restore_test` True forces the real restore, False skips it, None runs it when due."""
    now = time.time() if now is None else now
    report = {"time": pgbr.iso(now), "time_epoch": round(now, 3), "folder": pgbr.folder(deploy_to), "backup": None,
              "engine": "pgbackrest", "checks": []}
    try:
        found = [b for b in pgbr.backups(deploy_to, stanza) if not b["error"]]
    except ToolError as exc:
        found = []
        report["checks"].append(result("age", CRITICAL, f"the repository cannot be read: {exc}"))
    if not found and not report["checks"]:
        report["checks"].append(result("age", CRITICAL, f"there is no backup in the repository of {stanza}"))
    if found:
        newest = found[-1]
        report["backup"] = newest["id"]
        report["checks"] += [check_age(newest, limits, now), check_size(newest, found[:-1], limits.size_tolerance),
                             check_archive(deploy_to, stanza, found[0]), check_verify(deploy_to, stanza)]
        restore_check(report, history_folder, limits, now, restore_test,
                      lambda: check_restore(deploy_to, stanza, newest))
    return verdict(report)


def check_restore(deploy_to: str, stanza: str, newest: dict) -> dict:
    """Restore the newest backup into a scratch cluster on this host, let it reach consistency and
    promote, read every table of every database; removed afterwards, also when it fails."""
    base = pgbr.folder(deploy_to)
    with held(base, "restore-test"):  # one at a time: the leftovers removed here are no live run's
        for leftover in glob.glob(f"{base}/{SCRATCH}*"):
            if re.fullmatch(rf"{re.escape(SCRATCH)}\d+", os.path.basename(leftover)):
                _remove_cluster(leftover)
        scratch = f"{base}/{SCRATCH}{os.getpid()}"
        started = time.monotonic()
        try:
            tables = _restore_and_read(deploy_to, stanza, newest, scratch)
        except ToolError as exc:
            return result("restore", CRITICAL, f"restore test of {newest['id']}: {exc}", ran=True)
        finally:
            _remove_cluster(scratch)
    seconds = round(time.monotonic() - started, 2)
    rows = sum(tables.values())
    return result("restore", OK, f"restored {newest['id']} into a scratch cluster in {seconds}s; it recovered, "
                                 f"promoted and read {len(tables)} tables ({rows} rows) in full",
                  ran=True, seconds=seconds, row_counts=tables)


def _bin(version: str, program: str) -> str:
    return f"/usr/lib/postgresql/{version}/bin/{program}"


def _restore_and_read(deploy_to: str, stanza: str, newest: dict, scratch: str) -> dict[str, int]:
    data, sock = f"{scratch}/data", f"{scratch}/socket"
    os.makedirs(data, mode=0o700)
    os.makedirs(sock, mode=0o700)
    settings = open(f"{pgbr.folder(deploy_to)}/pgbackrest.conf").read()
    with open(f"{scratch}/pgbackrest.conf", "w") as f:  # the same repository, the cluster here
        f.write(_scratch_config(settings, scratch, stanza))
    pgbr.pgbackrest_with(f"{scratch}/pgbackrest.conf", stanza, f"--set={newest['id']}", "--type=immediate",
                         "--target-action=promote", "--archive-mode=off", "restore", timeout=6 * 3600)
    version = open(f"{data}/PG_VERSION").read().strip()
    control = subprocess.run([_bin(version, "pg_controldata"), data], capture_output=True, text=True).stdout
    values = dict(re.findall(r"^(\w+) setting:\s+(\S+)$", control, re.M))
    port = _free_port()
    with open(f"{data}/postgresql.conf", "w") as f:  # Debian keeps the real one in /etc: a minimal one
        f.write(f"listen_addresses = ''\nport = {port}\nunix_socket_directories = '{sock}'\n"
                "fsync = off\nshared_buffers = 32MB\n")
        f.write("".join(f"{CONTROLDATA_NAMES.get(k, k)} = {values[k]}\n" for k in SETTINGS if k in values))
    with open(f"{data}/pg_hba.conf", "w") as f:
        f.write("local all all trust\n")
    open(f"{data}/pg_ident.conf", "w").close()
    started = subprocess.run([_bin(version, "pg_ctl"), "-D", data, "-l", f"{scratch}/log", "-w", "-t", "600",
                              "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise ToolError("the restored cluster did not start: " + _tail(f"{scratch}/log"))
    psql = ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", sock, "-p", str(port), "-U",
            BOOTSTRAP_ROLE]
    deadline = time.monotonic() + 600
    while _ask(psql, "postgres", "SELECT pg_is_in_recovery()") != "f":
        if time.monotonic() > deadline:
            raise ToolError("the restored cluster did not finish its recovery in 10 min: " + _tail(f"{scratch}/log"))
        time.sleep(0.1)
    tables: dict[str, int] = {}
    for database in _ask(psql, "postgres", "SELECT datname FROM pg_database WHERE datallowconn AND datname "
                                           "NOT IN ('postgres', 'template1')").split():
        query = ("SELECT format('SELECT %L, count(*) FROM %I.%I', current_database() || '.' || schemaname || '.' "
                 "|| tablename, schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN "
                 "('pg_catalog', 'information_schema') \\gexec")
        for line in _ask(psql, database, query).splitlines():
            name, _, count = line.rpartition("|")
            tables[name] = int(count)
    return tables


def _scratch_config(settings: str, scratch: str, stanza: str) -> str:
    """The repository's settings of the stage's configuration, with this scratch cluster as pg1."""
    keep = [line for line in settings.splitlines() if re.match(r"(repo\d+-|compress|process-max|archive-timeout)", line)]
    return "\n".join(["[global]", *keep, f"log-path={scratch}", f"lock-path={scratch}", f"spool-path={scratch}",
                      "log-level-console=warn", "log-level-file=off", "", f"[{stanza}]",
                      f"pg1-path={scratch}/data", ""])


def _ask(psql: list[str], database: str, sql: str) -> str:
    done = subprocess.run([*psql, "-d", database], input=sql, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise ToolError(f"reading {database}: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str) -> str:
    try:
        return " / ".join(open(path).read().strip().splitlines()[-3:])[:500]
    except OSError:
        return "(no log)"


def _remove_cluster(scratch: str) -> None:
    """Stop a scratch cluster (fast, nothing of it is kept), then remove its folder."""
    data = f"{scratch}/data"
    if os.path.exists(f"{data}/postmaster.pid"):
        version = open(f"{data}/PG_VERSION").read().strip()
        subprocess.run([_bin(version, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True)
    shutil.rmtree(scratch, ignore_errors=True)
