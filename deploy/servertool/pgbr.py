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


def lsn_value(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def timeline_of(backup: dict) -> int:
    return int(backup["wal_start"][:8], 16)


def history(deploy_to: str, stanza: str, timeline: int) -> dict[int, int]:
    """Each ancestor timeline of `timeline` -> the LSN where it ended (its .history file in the
    repository, which PostgreSQL archives when a restore or a promotion begins a timeline)."""
    if timeline == 1:
        return {}
    archive_id = info(deploy_to, stanza)["archive"][-1]["id"]
    done = pgbackrest(deploy_to, stanza, "repo-get", f"archive/{stanza}/{archive_id}/{timeline:08X}.history",
                      check=False)
    if done.returncode != 0:
        raise ToolError(f"the repository lacks the history of timeline {timeline} (made before the stanza?): "
                        "no backup of an earlier timeline can reach it; take a full backup (fab backup --type full)")
    ends = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            ends[int(parts[0])] = lsn_value(parts[1])
    return ends


def base_for(deploy_to: str, stanza: str, lsn: str, timeline: int, found: list[dict] | None = None) -> dict:
    """The newest backup from which recovery reaches `lsn` on `timeline`: one of that timeline that
    ended before it, or one of an ancestor timeline that ended before that timeline forked off
    (a backup of an abandoned branch leads elsewhere). With the recovery_target_timeline to ask:
    "current" on the backup's own timeline (no history file needed), else the number."""
    found = [b for b in (found if found is not None else backups(deploy_to, stanza)) if not b["error"]]
    same = [b for b in found if timeline_of(b) == timeline and lsn_value(b["lsn_stop"]) <= lsn_value(lsn)]
    ancestors = history(deploy_to, stanza, timeline) if any(timeline_of(b) != timeline for b in found) else {}
    earlier = [b for b in found if timeline_of(b) in ancestors
               and lsn_value(b["lsn_stop"]) <= min(ancestors[timeline_of(b)], lsn_value(lsn))]
    usable = sorted(same + earlier, key=lambda b: lsn_value(b["lsn_stop"]))
    if not usable:
        raise ToolError(f"no backup in the repository leads to {lsn} on timeline {timeline} (none ended before it "
                        "on its timeline's history): take one (fab backup --type full)")
    base = usable[-1]
    return {"backup": base["id"], "backup_timeline": timeline_of(base),
            "target_timeline": "current" if timeline_of(base) == timeline else str(timeline)}


def ready(deploy_to: str, stanza: str, crit_age_hours: float, lsn: str, timeline: int) -> dict:
    """After a restore point at `lsn` on `timeline` was made (a deploy's, a restore's safety point):
    a backup no older than `crit_age_hours` from which it can be reached, and the archive taking
    WAL (`pgbackrest check` switches to a new WAL file and waits for it: the point's file is in)."""
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
        raise ToolError(f"WAL archiving is broken: {exc} (the WAL did not reach the repository in time: "
                        "the repository host down or full, SSH refused, or an archive far behind a burst of "
                        "writes: see pg_stat_archiver on the db host)") from None
    checked = round(time.monotonic() - started, 2)
    return {**base_for(deploy_to, stanza, lsn, timeline, found), "newest_age_hours": round(age, 2),
            "archive_check_seconds": checked}


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
