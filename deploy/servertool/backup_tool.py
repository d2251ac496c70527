"""The server side of backups, installed in `deploy_to/tools/` and run with the system
python3, by `fab` over SSH and by the systemd timers alike:

    backup_tool.py --deploy-to D dump [--label L] [--format F] [--compress N] [--jobs N] [--keep N] ...
    backup_tool.py --deploy-to D check [--json] [--textfile PATH] [--restore-test | --no-restore-test] ...
    backup_tool.py --deploy-to D list | verify ID | restore ID [--unless-written --xids X,..] | prune | revision
    backup_tool.py --deploy-to D unwritten ID --xids X,.. | pin ID --owner OP | unpin ID --owner OP | end-migrations KEY

DATABASE_URL comes from the environment (the unit's EnvironmentFile) or from
`--env-file` (fab), read with systemd's rules by envfile.py; the password reaches
PostgreSQL's programs only as PGPASSWORD.
Commands print one JSON document, except `check` without --json, which prints a
table; `check` exits 0, 1 or 2 (OK, WARNING, CRITICAL).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext

import checks
import locks
import dumps
import pgbr
import pgbr_checks
import envfile
import reports
import retention
import unwritten
from pgenv import (ToolError, database_name, end_sessions_holding, psql, revision_xids, revisions,
                   server_version_num, table_count)


def _serving_release(deploy_to: str) -> str | None:
    target = os.path.realpath(f"{deploy_to}/current")
    return os.path.basename(target) if os.path.isdir(target) else None


STAGE_WAIT_SECONDS = 2 * 3600


def wait_for_stage(deploy_to: str) -> None:
    """The timer's backup waits while a deploy, rollback or restore holds the stage's lock on
    this host (its dump's table locks would make a migration's ALTER time out)."""
    deadline = time.monotonic() + STAGE_WAIT_SECONDS
    while os.path.isdir(f"{deploy_to}/.lock"):
        if time.monotonic() > deadline:
            raise ToolError(f"the stage's lock ({deploy_to}/.lock) was held for {STAGE_WAIT_SECONDS // 3600} h: "
                            "no backup taken; see `fab status`")
        time.sleep(5)


def cmd_dump(a: argparse.Namespace) -> dict:
    if a.wait_for_stage:
        wait_for_stage(a.deploy_to)
    backup_id = a.id or f"{dumps.stamp()}-{a.label}"
    manifest = dumps.dump(a.folder, backup_id, a.release or _serving_release(a.deploy_to), a.label,
                          a.format, a.compress, a.jobs, a.content)
    manifest["pruned"] = []
    if a.keep:
        try:
            manifest["pruned"] = retention.prune(a.folder, a.deploy_to, dumps.manifests(a.folder), a.keep,
                                                 a.keep_daily_days, a.live_releases)
        except ToolError as exc:  # the backup is good; a retention problem must not fail it
            manifest["prune_error"] = str(exc)
        except Exception as exc:
            manifest["prune_error"] = f"{type(exc).__name__}: {exc}"
    return manifest


def cmd_check(a: argparse.Namespace) -> dict:
    limits = checks.Limits(a.warn_age_hours, a.crit_age_hours, a.size_tolerance, a.restore_test_days, a.jobs)
    return _recorded(a, checks.run(a.folder, limits, a.restore_test), checks.record, database_name())


def cmd_pgbr_check(a: argparse.Namespace) -> dict:
    limits = checks.Limits(a.warn_age_hours, a.crit_age_hours, 0.5, a.restore_test_days, 1)
    report = pgbr_checks.run(a.deploy_to, a.stanza, a.folder, limits, a.restore_test)
    return _recorded(a, report, checks.record_history, a.stanza)


def _recorded(a: argparse.Namespace, report: dict, record, database: str) -> dict:
    """The report kept in the history and the textfile; a host that cannot write them (its disk
    full) still gets its verdict, with that failure as one more CRITICAL check."""
    try:
        record(a.folder, report)
        if a.textfile:
            checks.write_textfile(a.textfile, reports.prometheus(report, database))
    except OSError as exc:
        report["checks"].append(checks.result("record", checks.CRITICAL, f"the history or the metrics file could "
                                                                         f"not be written: {exc.strerror}"))
        report["status"], report["state"] = checks.CRITICAL, checks.NAMES[checks.CRITICAL]
    return report


def cmd_restore(a: argparse.Namespace) -> dict:
    """In place, one at a time (a restore whose controller died may still run: the next one
    waits for it); the app's other sessions are ended first (the app is stopped by then);
    with --unless-written, refused unless nothing but the migration wrote since the backup."""
    with locks.held(a.folder, "restore-in-place"):
        psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
             "AND pid <> pg_backend_pid() AND usename = current_user;")
        if a.unless_written:
            reasons = unwritten.reasons_not_to_restore(dumps.load_manifest(a.folder, a.id), a.xids)
            if reasons:
                return {"ok": False, "touched": False, "written": reasons, "error": "not restored: " + "; ".join(reasons)}
        return dumps.restore(a.folder, a.id, a.jobs)


def cmd_unwritten(a: argparse.Namespace) -> dict:
    reasons = unwritten.reasons_not_to_restore(dumps.load_manifest(a.folder, a.id), a.xids)
    return {"unwritten": not reasons, "reasons": reasons}


def client_versions() -> dict:
    """The server's version and this host's pg_dump and pg_restore: a dump needs a pg_dump at least as new."""
    found = {"server_version_num": server_version_num()}
    for program in ("pg_dump", "pg_restore"):
        try:
            out = subprocess.run([program, "--version"], capture_output=True, text=True).stdout.split()
        except FileNotFoundError:
            out = []
        found[program] = out[-1] if out else None
    return found


def _env_file(path: str) -> dict[str, str]:
    try:
        return envfile.load(path)
    except OSError as exc:
        raise ToolError(f"cannot read the env file {path}: {exc.strerror} (fab setup writes a template)") from None
    except UnicodeDecodeError:
        raise ToolError(f"the env file {path} is not UTF-8 text (systemd refuses it too)") from None


READERS = {"check", "verify", "restore"}  # hold the backups shared: retention waits for them
COMMANDS = {
    "dump": cmd_dump,
    "check": cmd_check,
    "list": lambda a: dumps.manifests(a.folder),
    "verify": lambda a: dumps.verify(a.folder, a.id),
    "restore": cmd_restore,
    "prune": lambda a: {"pruned": retention.prune(a.folder, a.deploy_to, dumps.manifests(a.folder), a.keep,
                                                  a.keep_daily_days, a.live_releases)},
    "unwritten": cmd_unwritten,
    "pin": lambda a: locks.pin(a.folder, a.id, a.owner),
    "unpin": lambda a: locks.unpin(a.folder, a.id, a.owner),
    "revision": lambda a: {"revisions": revisions(), "xids": revision_xids(), "tables": table_count(),
                           **client_versions()},
    "end-migrations": lambda a: {"ended": end_sessions_holding(a.key)},
    "pgbr-backup": lambda a: pgbr.backup(a.deploy_to, a.stanza, a.type),
    "pgbr-list": lambda a: {"backups": pgbr.backups(a.deploy_to, a.stanza), "points": pgbr.points(a.deploy_to)},
    "pgbr-ready": lambda a: pgbr.ready(a.deploy_to, a.stanza, a.crit_age_hours, a.lsn, a.timeline),
    "pgbr-base": lambda a: pgbr.base_for(a.deploy_to, a.stanza, a.lsn, a.timeline),
    "pgbr-point": lambda a: pgbr.record_point(a.deploy_to, json.loads(a.point)),
    "pgbr-check": cmd_pgbr_check,
}
CHECKS = {"check", "pgbr-check"}  # exit 0, 1 or 2; a table unless --json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backup_tool.py", description=__doc__.splitlines()[0])
    p.add_argument("--deploy-to", required=True)
    p.add_argument("--env-file", help="read the variables from this file (systemd's EnvironmentFile= rules)")
    sub = p.add_subparsers(dest="command", required=True)
    dump = sub.add_parser("dump")
    dump.add_argument("--id")
    dump.add_argument("--label", default="manual")
    dump.add_argument("--release")
    dump.add_argument("--format", default="directory", choices=dumps.FORMATS)
    dump.add_argument("--compress", type=int, default=6)
    dump.add_argument("--content", action="store_true", help="keep each table's row digest (pre-deploy backups)")
    dump.add_argument("--wait-for-stage", action="store_true",
                      help="first wait while the stage's lock is held on this host (the timer's backups)")
    for command in (dump, sub.add_parser("prune")):
        command.add_argument("--keep", type=int, default=0, help="0: do not prune")
        command.add_argument("--keep-daily-days", type=int, default=0)
        command.add_argument("--live-releases", type=lambda text: [r for r in text.split(",") if r], default=None,
                             help="releases a rollback can reach, for a host without releases/ (comma-separated)")
    check = sub.add_parser("check")
    check.add_argument("--json", action="store_true")
    check.add_argument("--textfile", help="a Prometheus textfile-collector file to (re)write")
    check.add_argument("--warn-age-hours", type=float, default=26)
    check.add_argument("--crit-age-hours", type=float, default=50)
    check.add_argument("--size-tolerance", type=float, default=0.5)
    check.add_argument("--restore-test-days", type=float, default=7)
    check.add_argument("--restore-test", action=argparse.BooleanOptionalAction, default=None)
    for name in ("verify", "restore", "unwritten", "pin", "unpin"):
        sub.add_parser(name).add_argument("id")
    for name in ("pin", "unpin"):
        sub.choices[name].add_argument("--owner", required=True, help="the operation's id (its lock holder id)")
    xids = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    sub.choices["restore"].add_argument("--unless-written", action="store_true")
    for name in ("restore", "unwritten"):
        sub.choices[name].add_argument("--xids", type=xids, default=[], help="the migration's transaction ids")
    for command in (dump, check, sub.choices["restore"]):
        command.add_argument("--jobs", type=int, default=2)
    sub.add_parser("list")
    sub.add_parser("revision")
    sub.add_parser("end-migrations").add_argument("key", type=int)
    _pgbackrest_commands(sub)
    return p


def _pgbackrest_commands(sub) -> None:
    """The pgbackrest engine's commands, on the repository host."""
    for name in ("pgbr-backup", "pgbr-list", "pgbr-ready", "pgbr-base", "pgbr-point", "pgbr-check"):
        sub.add_parser(name).add_argument("--stanza", required=True)
    for name in ("pgbr-ready", "pgbr-base"):
        sub.choices[name].add_argument("--lsn", required=True)
        sub.choices[name].add_argument("--timeline", type=int, required=True)
    sub.choices["pgbr-backup"].add_argument("--type", choices=("full", "diff", "incr"), default="full")
    sub.choices["pgbr-ready"].add_argument("--crit-age-hours", type=float, required=True)
    sub.choices["pgbr-point"].add_argument("point", help="the restore point, as JSON")
    check = sub.choices["pgbr-check"]
    check.add_argument("--json", action="store_true")
    check.add_argument("--textfile")
    check.add_argument("--warn-age-hours", type=float, default=26)
    check.add_argument("--crit-age-hours", type=float, default=50)
    check.add_argument("--restore-test-days", type=float, default=7)
    check.add_argument("--restore-test", action=argparse.BooleanOptionalAction, default=None)


def main(argv: list[str]) -> int:
    # A lost SSH session (SIGHUP) or a stopped unit (SIGTERM) unwinds like an error: a dump
    # in progress is stopped and its partial files removed.
    for number in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, lambda received, frame: sys.exit(128 + received))
    args = parser().parse_args(argv)
    args.folder = f"{args.deploy_to}/backups"
    try:
        if args.env_file:
            os.environ.update(_env_file(args.env_file))
        with locks.held(args.folder, "backups", shared=True) if args.command in READERS else nullcontext():
            answer = COMMANDS[args.command](args)
    except ToolError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return checks.CRITICAL if args.command in CHECKS else 1
    if args.command in CHECKS and not args.json:
        print(reports.table(answer))
    else:
        print(json.dumps(answer))
    return answer["status"] if args.command in CHECKS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
