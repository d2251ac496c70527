"""The backup check, for a schedule: the newest backup's age, size, sha256 and a full
read, and now and then a real restore into a scratch database. Each check gets a
status in the Nagios convention (0 OK, 1 WARNING, 2 CRITICAL); the run's status is
the worst of them. Every run is appended to backups/check-history.jsonl."""
from __future__ import annotations

import calendar
import json
import os
import re
import statistics
import time
from dataclasses import dataclass

from dumps import iso, keep_verdict, manifests, reads_completely, restore, sha256_matches
from locks import held
from pgenv import ToolError, create_database, databases_starting, drop_database

OK, WARNING, CRITICAL = 0, 1, 2
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
SCRATCH_PREFIX = "flask_deploy_restore_check_"
HISTORY = "check-history.jsonl"


@dataclass(frozen=True)
class Limits:
    warn_age_hours: float
    crit_age_hours: float
    size_tolerance: float       # a fraction: the newest may be this much smaller than the median of earlier ones
    restore_test_days: float    # a real restore at least this often; 0 = only when asked
    jobs: int


def result(name: str, status: int, detail: str, **values) -> dict:
    return {"check": name, "status": status, "state": NAMES[status], "detail": detail, **values}


def check_age(newest: dict, limits: Limits, now: float) -> dict:
    taken = calendar.timegm(time.strptime(newest["time"], "%Y-%m-%dT%H:%M:%SZ"))
    hours = (now - taken) / 3600
    status = CRITICAL if hours > limits.crit_age_hours else WARNING if hours > limits.warn_age_hours else OK
    return result("age", status, f"{hours:.1f} h old (warning over {limits.warn_age_hours:g} h, critical over "
                                 f"{limits.crit_age_hours:g} h)", seconds=round(now - taken), taken=taken)


def app_rows(manifest: dict) -> int:
    """Rows in the app's tables (alembic_version's one row does not make a dump non-empty)."""
    return sum(n for table, n in manifest.get("row_counts", {}).items() if not table.endswith(".alembic_version"))


def check_size(newest: dict, earlier: list[dict], tolerance: float) -> dict:
    size = newest.get("size", 0)
    if size == 0:
        return result("size", CRITICAL, "the dump is empty (0 bytes)", bytes=0)
    rows = app_rows(newest)
    earlier_rows = [app_rows(m) for m in earlier[-5:]]
    if rows == 0 and any(earlier_rows):
        return result("size", WARNING, "the dump holds no rows, but earlier backups did", bytes=size)
    if not earlier:
        return result("size", OK, f"{size} bytes (no earlier backup to compare with)", bytes=size)
    median = statistics.median(m.get("size", 0) for m in earlier[-5:])
    ratio = size / median if median else 1.0
    # Shrinking is the anomaly to catch (a table lost, a dump cut short); growth is what data does.
    status = WARNING if ratio < 1 - tolerance else OK
    word = "smaller" if ratio < 1 else "larger"
    return result("size", status, f"{size} bytes, {abs(ratio - 1):.0%} {word} than the median of the last "
                                  f"{len(earlier[-5:])} ({median:.0f}; warning below {1 - tolerance:.0%} of it)",
                  bytes=size)


def check_sha256(folder: str, newest: dict) -> dict:
    ok, detail = sha256_matches(folder, newest)
    return result("sha256", OK if ok else CRITICAL, detail)


def check_read(folder: str, newest: dict) -> dict:
    ok, detail = reads_completely(folder, newest["id"])
    return result("read", OK if ok else CRITICAL, detail)


def restore_tests_passed(history: list[dict]) -> list[float]:
    """When a real restore test passed, from the check history (oldest first)."""
    return [h["time_epoch"] for h in history
            if any(c["check"] == "restore" and c["status"] == OK and c.get("ran") for c in h.get("checks", []))]


def restore_test_due(history: list[dict], limits: Limits, now: float) -> tuple[bool, str]:
    passed = restore_tests_passed(history)
    if limits.restore_test_days <= 0:
        return False, "real restore tests only when asked (--restore-test)"
    if not passed:
        return True, "no restore test has passed yet"
    due = max(passed) + limits.restore_test_days * 86400
    if now >= due:
        return True, f"the last passed {(now - max(passed)) / 86400:.1f} days ago"
    return False, f"last passed {iso(max(passed))}; next due {iso(due)}"


def check_restore(folder: str, newest: dict, jobs: int) -> dict:
    """Restore into a scratch database, compare with the manifest, drop it (always)."""
    scratch = f"{SCRATCH_PREFIX}{os.getpid()}"
    with held(folder, "restore-test"):  # one at a time: the leftovers dropped here are no live run's
        try:
            for leftover in databases_starting(SCRATCH_PREFIX):  # from a run that was killed
                if re.fullmatch(re.escape(SCRATCH_PREFIX) + r"\d+", leftover):  # ours: never another name
                    drop_database(leftover)
            create_database(scratch)
            restored = restore(folder, newest["id"], jobs, database=scratch)
        except ToolError as exc:
            return result("restore", CRITICAL, f"restore test: {exc}", ran=True)
        finally:
            drop_database(scratch)
    if not restored["ok"]:
        return result("restore", CRITICAL, "pg_restore failed: " + restored["error"].splitlines()[-1][:300], ran=True)
    differ = sorted(t for t in set(restored["row_counts"]) | set(newest.get("row_counts", {}))
                    if restored["row_counts"].get(t) != newest.get("row_counts", {}).get(t))
    if restored["revision"] != newest.get("revision") or differ:
        return result("restore", CRITICAL, f"restored revision {restored['revision']} (manifest "
                                           f"{newest.get('revision')}); row counts differ in: "
                                           f"{', '.join(differ[:5]) or 'none'}", ran=True)
    return result("restore", OK, f"restored into a scratch database in {restored['duration']}s; revision and "
                                 f"row counts of {len(restored['row_counts'])} tables as in the manifest",
                  ran=True, seconds=restored["duration"])


def read_jsonl(path: str) -> list[dict]:
    """The JSON lines of `path` (a line cut short by a crash is skipped); [] without the file."""
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def read_history(folder: str) -> list[dict]:
    return read_jsonl(os.path.join(folder, HISTORY))


def restore_check(report: dict, history_folder: str, limits: Limits, now: float, restore_test: bool | None,
                  run_restore) -> None:
    """The restore check (`run_restore()`) when forced or due, else why not; the last pass, for the metrics."""
    history = read_history(history_folder)
    due, why = restore_test_due(history, limits, now)
    if restore_test or (restore_test is None and due):
        report["checks"].append(run_restore())
    else:
        report["checks"].append(result("restore", OK, f"not run: {why}", ran=False))
    passed = restore_tests_passed(history + [report])
    report["restore_test_passed_epoch"] = passed[-1] if passed else None


def verdict(report: dict) -> dict:
    """The run's status: the worst of its checks."""
    report["status"] = max(c["status"] for c in report["checks"])
    report["state"] = NAMES[report["status"]]
    return report


def run(folder: str, limits: Limits, restore_test: bool | None, now: float | None = None) -> dict:
    """All checks on the newest backup; `restore_test` True forces the real restore, False skips it,
    None runs it when due."""
    now = time.time() if now is None else now
    found = manifests(folder)
    report = {"time": iso(now), "time_epoch": round(now, 3), "folder": folder, "backup": None, "checks": []}
    if not found:
        report["checks"].append(result("age", CRITICAL, f"there is no backup in {folder}"))
    else:
        newest, earlier = found[-1], found[:-1]
        report["backup"] = newest["id"]
        report["checks"] += [check_age(newest, limits, now), check_size(newest, earlier, limits.size_tolerance),
                             check_sha256(folder, newest), check_read(folder, newest)]
        restore_check(report, folder, limits, now, restore_test, lambda: check_restore(folder, newest, limits.jobs))
    return verdict(report)


def record_history(folder: str, report: dict) -> None:
    """Append the run to the history (the restore-test cadence is read from it)."""
    old = os.umask(0o077)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(os.path.join(folder, HISTORY), "a") as f:
            f.write(json.dumps(report) + "\n")
    finally:
        os.umask(old)


def record(folder: str, report: dict) -> None:
    """Append the run to the history, and keep the verdict beside the backup it checked."""
    record_history(folder, report)
    if report["backup"]:
        by_name = {c["check"]: c for c in report["checks"]}
        verdict = {"id": report["backup"], "time": report["time"], "source": "check",
                   "ok": by_name["sha256"]["status"] == OK and by_name["read"]["status"] == OK
                   and by_name["restore"]["status"] == OK,
                   "sha256_ok": by_name["sha256"]["status"] == OK, "read_ok": by_name["read"]["status"] == OK,
                   "restore": by_name["restore"]["detail"]}
        old = os.umask(0o077)
        try:
            keep_verdict(folder, verdict)
        finally:
            os.umask(old)


def write_textfile(path: str, text: str) -> None:
    """Atomically, so that node_exporter never reads half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
