"""Which backups to keep: the newest N, the newest of each of the last D days, the newest
verified one, and every pre-deploy backup of a release that can still be rolled back
to. Everything else is pruned after a successful backup."""
from __future__ import annotations

import glob
import json
import os
import time

from dumps import dump_path, remove
from locks import Busy, held, pinned

DEPLOY_LABEL = "predeploy"


def plan(manifests: list[dict], keep: int, daily_days: int, live_releases: set[str],
         now: float) -> tuple[dict[str, str], list[str]]:
    """(why each kept backup is kept, ids to remove) for `manifests` (any order)."""
    newest_first = sorted(manifests, key=lambda m: (m.get("time", ""), m.get("id", "")), reverse=True)
    reasons: dict[str, str] = {}

    def keep_for(backup_id: str, why: str) -> None:
        reasons.setdefault(backup_id, why)

    for m in newest_first[:keep]:
        keep_for(m["id"], f"one of the newest {keep}")
    verified = [m for m in newest_first if (m.get("verified") or {}).get("ok")]
    if verified:
        keep_for(verified[0]["id"], "the newest verified backup")
    oldest_day = time.strftime("%Y-%m-%d", time.gmtime(now - (daily_days - 1) * 86400))
    days: set[str] = set()
    for m in newest_first:
        day = m.get("time", "")[:10]
        if daily_days and day >= oldest_day and day not in days:
            days.add(day)
            keep_for(m["id"], f"the newest of {day}")
        if m.get("label") == DEPLOY_LABEL and m.get("release") in live_releases:
            keep_for(m["id"], f"taken by the deploy of {m['release']}, which can still be rolled back")
    return reasons, [m["id"] for m in newest_first if m["id"] not in reasons]


def live_releases(deploy_to: str, folder: str, told: list[str] | None = None) -> set[str]:
    """Releases a rollback can still reach: as fab `told` (it lists them on the migrations host),
    else this host's releases not marked failed, else (a database host, from a timer) the list
    fab last sent, kept in the backups folder."""
    saved = os.path.join(folder, ".live-releases.json")
    if told is not None:
        with open(saved, "w") as f:
            json.dump(told, f)
        return set(told)
    folders = glob.glob(f"{deploy_to}/releases/*/")
    if not folders:
        try:
            return set(json.load(open(saved)))
        except (OSError, ValueError):
            return set()
    live = set()
    for folder in folders:
        release = os.path.basename(folder.rstrip("/"))
        try:
            status = json.load(open(f"{folder}.release.json")).get("status")
        except (OSError, ValueError):
            status = None
        if status != "failed":
            live.add(release)
    return live


def prune(folder: str, deploy_to: str, manifests: list[dict], keep: int, daily_days: int,
          told: list[str] | None = None) -> list[str]:
    """Remove what `plan` does not keep; the ids removed. Never while a backup is being read
    (a restore, a check): then nothing is removed this time, and the next backup prunes."""
    try:
        with held(folder, "backups", wait=False):
            _, doomed = plan(manifests, keep, daily_days, live_releases(deploy_to, folder, told), time.time())
            doomed = [b for b in doomed if b not in pinned(folder)]  # an operation is reading it
            for backup_id in doomed:
                remove(dump_path(folder, backup_id))
                for suffix in (".verify.json", ".json"):
                    remove(f"{folder}/{backup_id}{suffix}")
    except Busy:
        raise Busy("skipped: a backup is being read (a restore or a check); the next backup prunes") from None
    return doomed
