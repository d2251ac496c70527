"""The pgbackrest engine, on the repository host (the stage's host of the role "backup"),
as the deploy user: backups, their list, the pre-deploy readiness test, restore points'
record and the check. pgBackRest itself does the work; its settings are in
`deploy_to/pgbackrest/pgbackrest.conf`, which `fab setup` writes. Standard library only.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

from checks import read_jsonl
from dumps import iso
from pgenv import ToolError

SEGMENTS_PER_LOG = 0x100  # WAL files are named TIMELINE LOG SEGMENT; 256 16 MB segments per LOG
WAL = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})-[0-9a-f]{40}(\.\w+)?")
POINTS = "restore-points.jsonl"


def folder(deploy_to: str) -> str:
    return f"{deploy_to}/pgbackrest"


def pgbackrest(deploy_to: str, stanza: str, *args: str, timeout: float | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    """`pgbackrest` with the stage's configuration; a failure is a ToolError with its last lines."""
    return pgbackrest_with(f"{folder(deploy_to)}/pgbackrest.conf", stanza, *args, timeout=timeout, check=check)


def pgbackrest_with(config: str, stanza: str, *args: str, timeout: float | None = None,
                    check: bool = True) -> subprocess.CompletedProcess:
    argv = ["pgbackrest", f"--config={config}", f"--stanza={stanza}", *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ToolError("pgbackrest is not installed on this host (apt install pgbackrest)") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"pgbackrest {args[-1]} did not finish in {timeout:.0f}s") from None
    if check and done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
        raise ToolError(f"pgbackrest {args[-1]} failed ({done.returncode}): " + " / ".join(lines[-3:])[:600])
    return done


def info(deploy_to: str, stanza: str) -> dict:
    """pgBackRest's view of the stanza (`info --output=json`)."""
    found = json.loads(pgbackrest(deploy_to, stanza, "--output=json", "info").stdout or "[]")
    if not found:
        raise ToolError(f"pgBackRest knows no stanza {stanza!r} here: run fab setup")
    return found[0]


def summary(entry: dict) -> dict:
    """One backup of `info`, in the toolkit's terms (an id, a time, a size)."""
    return {"id": entry["label"], "type": entry["type"], "engine": "pgbackrest",
            "time": iso(entry["timestamp"]["stop"]), "start_epoch": entry["timestamp"]["start"],
            "stop_epoch": entry["timestamp"]["stop"], "size": entry["info"]["size"],
            "repo_size": entry["info"]["repository"]["delta"], "prior": entry.get("prior"),
            "lsn_start": entry["lsn"]["start"], "lsn_stop": entry["lsn"]["stop"],
            "wal_start": entry["archive"]["start"], "wal_stop": entry["archive"]["stop"],
            "error": bool(entry.get("error")), "duration": entry["timestamp"]["stop"] - entry["timestamp"]["start"]}


def backups(deploy_to: str, stanza: str) -> list[dict]:
    """The backups of the stanza, oldest first."""
    return [summary(b) for b in info(deploy_to, stanza).get("backup", [])]


def backup(deploy_to: str, stanza: str, kind: str) -> dict:
    """A backup of `kind` (full, diff, incr); its summary and how long it took."""
    started = time.monotonic()
    before = {b["id"] for b in backups(deploy_to, stanza)}
    pgbackrest(deploy_to, stanza, f"--type={kind}", "backup")
    made = [b for b in backups(deploy_to, stanza) if b["id"] not in before]
    if not made:
        raise ToolError("pgbackrest backup ended without a new backup in the repository")
    return {**made[-1], "seconds": round(time.monotonic() - started, 2)}


def ready(deploy_to: str, stanza: str, crit_age_hours: float) -> dict:
    """Before a deploy migrates: a backup no older than `crit_age_hours`, and the archive taking
    WAL now (`pgbackrest check` switches to a new WAL file and waits for it to arrive)."""
    found = backups(deploy_to, stanza)
    if not found:
        raise ToolError("the repository holds no backup: a restore point needs a backup before it "
                        "(fab backup takes one)")
    age = (time.time() - found[-1]["stop_epoch"]) / 3600
    if age > crit_age_hours:
        raise ToolError(f"the newest backup ({found[-1]['id']}) is {age:.1f} h old, past crit_age_hours "
                        f"({crit_age_hours:g}): take one first (fab backup)")
    started = time.monotonic()
    try:
        pgbackrest(deploy_to, stanza, "check")
    except ToolError as exc:
        raise ToolError(f"WAL archiving is broken: {exc}") from None
    return {"newest": found[-1]["id"], "newest_timeline": int(found[-1]["wal_start"][:8], 16),
            "newest_age_hours": round(age, 2),
            "archive_check_seconds": round(time.monotonic() - started, 2)}


def record_point(deploy_to: str, point: dict) -> dict:
    """Keep a restore point's name, release, LSN, timeline and time, for `fab restore --release`."""
    old = os.umask(0o077)
    try:
        with open(os.path.join(folder(deploy_to), POINTS), "a") as f:
            f.write(json.dumps(point) + "\n")
    finally:
        os.umask(old)
    return point


def points(deploy_to: str) -> list[dict]:
    return read_jsonl(os.path.join(folder(deploy_to), POINTS))


def segment_number(name: str) -> tuple[int, int]:
    """(timeline, segment number) of a WAL file name."""
    timeline, log, segment = int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    return timeline, log * SEGMENTS_PER_LOG + segment


def archived_segments(deploy_to: str, stanza: str) -> dict[int, set[int]]:
    """The WAL segments in the repository, per timeline."""
    listing = json.loads(pgbackrest(deploy_to, stanza, "--output=json", "--recurse", "repo-ls",
                                    f"archive/{stanza}").stdout or "{}")
    found: dict[int, set[int]] = {}
    for path, entry in listing.items():
        match = WAL.fullmatch(path.rpartition("/")[2])
        if entry.get("type") == "file" and match:
            timeline, number = segment_number(path.rpartition("/")[2])
            found.setdefault(timeline, set()).add(number)
    return found


def missing_segments(found: dict[int, set[int]], oldest_start: str) -> list[str]:
    """WAL files absent between the oldest backup's first one and the newest archived one, per
    timeline: a gap makes every point after it unreachable."""
    first_timeline, first = segment_number(oldest_start)
    missing = []
    for timeline, numbers in sorted(found.items()):
        low = first if timeline == first_timeline else min(numbers)
        for number in range(low, max(numbers) + 1):
            if number not in numbers:
                missing.append(f"{timeline:08X}{number // SEGMENTS_PER_LOG:08X}{number % SEGMENTS_PER_LOG:08X}")
    if first_timeline not in found:
        missing.insert(0, oldest_start[:24])
    return missing
