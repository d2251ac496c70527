#!/usr/bin/python3
"""flask-deploy-pgbackrest: the pgbackrest engine's few actions on the database host that
need the postgres account or root, for the deploy user through one sudo rule. Every
argument is checked here, so the rule grants these actions and nothing else.

    flask-deploy-pgbackrest archive  --stanza S --cluster 15/main   (fab setup: WAL archiving on)
    flask-deploy-pgbackrest point    --stanza S --cluster 15/main NAME
    flask-deploy-pgbackrest restore  --stanza S --cluster 15/main --type immediate|time|name|latest
                                     [--target T] [--target-timeline N] [--set LABEL]
    flask-deploy-pgbackrest unwritten --stanza S --cluster 15/main --since LSN --xids X,..

Installed by `fab setup` (root-owned, 0755) from deploy/servertool/pgbr_db.py, beside the
stanza and cluster it serves (REGISTERED, root-owned): any other is refused, so that the rule
cannot stop or restore another cluster of the host. Prints one JSON document; exits 0, or 1
with {"ok": false, "error": ...}. Standard library only.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import re
import subprocess
import sys
import time

CONFIG = "/etc/pgbackrest/flask-deploy/pgbackrest.conf"
REGISTERED = "/etc/flask-deploy/pgbackrest-helper.json"  # {"stanza": ..., "cluster": ...}, written by fab setup
NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}"
PATTERNS = {
    "stanza": r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}",
    "cluster": r"(1[5-9]|[2-9][0-9])/[A-Za-z0-9_-]{1,40}",
    "name": NAME,
    "time": r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:?\d\d)?|Z)?",
    "set": r"\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?",
    "lsn": r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}",
    "timeline": r"current|latest|[1-9]\d{0,9}",
    "xids": r"\d{1,20}(,\d{1,20}){0,200}",
}


class Refused(Exception):
    """An expected failure; `touched`: the cluster was stopped (and may have been changed) first."""

    def __init__(self, message: str, touched: bool = False) -> None:
        super().__init__(message)
        self.touched = touched


LOCK = "/run/flask-deploy-pgbackrest.lock"  # one restore at a time: a killed controller's may still run


def checked(kind: str):
    def parse(text: str) -> str:
        if not re.fullmatch(PATTERNS[kind], text):
            raise argparse.ArgumentTypeError(f"not a valid {kind}: {text[:80]!r}")
        return text
    return parse


def run(argv: list[str], user: str | None = None, input: str | None = None, timeout: float = 3600) -> str:
    as_user = ["runuser", "-u", user, "--"] if user else []
    done = subprocess.run([*as_user, *argv], capture_output=True, text=True, input=input, timeout=timeout)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
        raise Refused(f"{argv[0]} {argv[-1] if len(argv) > 1 else ''} failed: " + " / ".join(lines[-3:])[:600])
    return done.stdout


def psql(sql: str, database: str = "postgres", **variables: str) -> list[list[str]]:
    """`sql` as the postgres superuser on the local socket; `:'name'` variables are quoted by psql."""
    sets = [arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")]
    out = run(["psql", "-X", "-A", "-t", "-q", "-F", "\t", "-v", "ON_ERROR_STOP=1", *sets, "-d", database],
              user="postgres", input=sql)
    return [line.split("\t") for line in out.splitlines() if line]


def check_registered(stanza: str, cluster: str, path: str = REGISTERED) -> None:
    """Only the stanza and cluster that fab setup registered on this host."""
    try:
        with open(path) as f:
            registered = json.load(f)
    except (OSError, ValueError):
        raise Refused(f"no stanza is registered on this host ({path}): run fab setup") from None
    if (stanza, cluster) != (registered.get("stanza"), registered.get("cluster")):
        raise Refused(f"this host serves stanza {registered.get('stanza')} of cluster {registered.get('cluster')}, "
                      f"not {stanza} of {cluster}: run fab setup if deploy.toml changed them")


def unit(cluster: str) -> str:
    return f"postgresql@{cluster.replace('/', '-')}.service"


def cmd_archive(a) -> dict:
    """WAL archiving through pgBackRest (ALTER SYSTEM); archive_mode needs a restart to change."""
    command = f"pgbackrest --config={CONFIG} --stanza={a.stanza} archive-push %p"
    before = psql("SHOW archive_mode;")[0][0]
    psql("ALTER SYSTEM SET archive_command = :'command';\nALTER SYSTEM SET archive_mode = 'on';\n"
         "SELECT pg_reload_conf();", command=command)
    if a.restart and before != "on":
        run(["systemctl", "restart", unit(a.cluster)])
    now = psql("SHOW archive_mode;")[0][0]
    return {"archive_mode": now, "restart_needed": now != "on", "archive_command": command}


def cmd_point(a) -> dict:
    """A named restore point, pushed to the repository at once (a switch to the next WAL file)."""
    lsn, walfile, at = psql("SELECT pg_create_restore_point(:'name')::text, "
                           "pg_walfile_name(pg_current_wal_lsn()), to_char(now() AT TIME ZONE 'UTC', "
                           "'YYYY-MM-DD HH24:MI:SS.US+00');", name=a.name)[0]
    return {"name": a.name, "lsn": lsn, "timeline": int(walfile[:8], 16), "time": at}


def in_recovery() -> bool:
    return psql("SELECT pg_is_in_recovery();")[0][0] == "t"


def cmd_restore(a) -> dict:
    """Stop the cluster, restore in place (--delta: only the files that differ), start it and wait
    until it has replayed to its target and promoted. One at a time (a lock the kernel releases)."""
    started = time.monotonic()
    options = [f"--type={a.type}", "--delta", "--target-action=promote"] if a.type != "latest" else ["--delta"]
    if a.type in ("time", "name"):
        options.append(f"--target={a.target}")
    if a.target_timeline:
        options.append(f"--target-timeline={a.target_timeline}")
    if a.set:
        options.append(f"--set={a.set}")
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run(["systemctl", "stop", unit(a.cluster)])
        try:
            run(["pgbackrest", f"--config={CONFIG}", f"--stanza={a.stanza}", *options, "restore"], user="postgres",
                timeout=6 * 3600)
            restored = time.monotonic()
            try:
                run(["systemctl", "start", unit(a.cluster)], timeout=6 * 3600)
            except Refused:
                raise Refused(f"the restored cluster did not start: {log_tail(a.cluster)}") from None
            wait_until_promoted(a.cluster)
        except Refused as exc:
            raise Refused(str(exc), touched=True) from None
    walfile = psql("SELECT pg_walfile_name(pg_current_wal_lsn());")[0][0]
    return {"ok": True, "restore_seconds": round(restored - started, 2),
            "seconds": round(time.monotonic() - started, 2), "timeline": int(walfile[:8], 16)}


def wait_until_promoted(cluster: str) -> None:
    deadline = time.monotonic() + 6 * 3600
    while True:
        try:
            if not in_recovery():
                return
        except Refused:
            if subprocess.run(["systemctl", "is-active", "--quiet", unit(cluster)]).returncode != 0:
                raise Refused(f"the cluster stopped during its recovery: {log_tail(cluster)}") from None
        if time.monotonic() > deadline:
            raise Refused("the cluster did not finish its recovery")
        time.sleep(0.2)


def log_tail(cluster: str) -> str:
    path = f"/var/log/postgresql/postgresql-{cluster.replace('/', '-')}.log"
    try:
        lines = [line for line in open(path).read().splitlines()[-200:] if "FATAL" in line or "PANIC" in line]
    except OSError:
        return "(no log)"
    return " / ".join(lines[-2:])[:500] or "(see " + path + ")"


# Read up to what is flushed, after a switch to the next WAL file has flushed every record written
# so far (a commit without synchronous_commit may still be in the WAL buffers).
WAL_RECORDS = """
CREATE EXTENSION IF NOT EXISTS pg_walinspect;
SELECT pg_switch_wal() \\g /dev/null
SELECT xid, resource_manager, record_type, coalesce(block_ref, ''), description
  FROM pg_get_wal_records_info(:'since', pg_current_wal_flush_lsn()) WHERE xid <> 0;
"""
FIRST_USER_OBJECT = 16384  # PostgreSQL's FirstNormalObjectId: every user table's file is numbered from here


def cmd_unwritten(a) -> dict:
    """Why it cannot be proven that nothing but the migration (its xids) wrote to a table of the
    cluster since the LSN `since`; [] when it can. The evidence is the WAL itself: every change to
    a table is logged with its transaction's id and the file it changed. Every database counts: a
    restore rewinds the whole cluster. Also reasons: a transaction that committed in the range
    having written before it (its rows are older than the point, its commit is not), one still
    open that wrote, a prepared one."""
    ours = {int(x) & 0xFFFFFFFF for x in a.xids.split(",")}
    records = psql(WAL_RECORDS, since=a.since)
    commits = [(xid, description) for xid, manager, kind, _, description in records
               if manager == "Transaction" and kind.startswith("COMMIT")]
    for xid, description in commits:  # the migration's subtransactions count as its own
        if int(xid) in ours:
            ours |= {int(x) for x in re.findall(r"\d+", description.partition("subxacts:")[2].split(";")[0])}
    reasons: dict[str, set[str]] = {}
    wrote_in_range = set()
    for xid, manager, kind, blocks, _ in records:
        if int(xid) in ours or (manager == "Transaction" and kind.startswith("COMMIT")):
            continue
        wrote_in_range.add(xid)
        for _, _, filenode in re.findall(r"rel (\d+)/(\d+)/(\d+)", blocks):
            if int(filenode) >= FIRST_USER_OBJECT:  # a catalog's own files (ANALYZE's statistics) are not data
                reasons.setdefault(xid, set()).add(f"{manager} {kind}")
    for xid, _ in commits:
        if int(xid) not in ours and xid not in wrote_in_range:
            reasons.setdefault(xid, set()).add("committed what it wrote before the restore point")
    open_writers = psql("SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' "
                        "AND granted AND pid IS DISTINCT FROM pg_backend_pid();")[0][0]
    prepared = psql("SELECT count(*) FROM pg_prepared_xacts;")[0][0]
    found = [f"transaction {xid} wrote to the cluster's tables since the restore point ({', '.join(sorted(kinds))})"
             for xid, kinds in sorted(reasons.items())]
    found += [f"{open_writers} open transaction(s) have written and may commit"] if int(open_writers) else []
    found += [f"{prepared} prepared transaction(s) may commit"] if int(prepared) else []
    return {"unwritten": not found, "reasons": found, "records": len(records)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flask-deploy-pgbackrest", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("archive", "point", "restore", "unwritten"):
        command = sub.add_parser(name)
        command.add_argument("--stanza", type=checked("stanza"), required=True)
        command.add_argument("--cluster", type=checked("cluster"), required=True)
    sub.choices["archive"].add_argument("--restart", action="store_true", help="restart when archive_mode changes")
    sub.choices["point"].add_argument("name", type=checked("name"))
    restore = sub.choices["restore"]
    restore.add_argument("--type", choices=("immediate", "time", "name", "latest"), required=True)
    restore.add_argument("--target")
    restore.add_argument("--target-timeline", type=checked("timeline"))
    restore.add_argument("--set", type=checked("set"))
    unwritten = sub.choices["unwritten"]
    unwritten.add_argument("--since", type=checked("lsn"), required=True)
    unwritten.add_argument("--xids", type=checked("xids"), required=True)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "restore" and args.type in ("time", "name"):
        if not args.target or not re.fullmatch(PATTERNS["time" if args.type == "time" else "name"], args.target):
            parser().error(f"--type {args.type} needs a valid --target")
    try:
        check_registered(args.stanza, args.cluster)
        answer = {"archive": cmd_archive, "point": cmd_point, "restore": cmd_restore,
                  "unwritten": cmd_unwritten}[args.command](args)
    except (Refused, subprocess.TimeoutExpired) as exc:
        print(json.dumps({"ok": False, "error": str(exc), "touched": getattr(exc, "touched", True)}))
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
