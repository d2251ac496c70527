"""Which backups retention keeps: a pure function over the manifests (no host needed)."""
import calendar
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "servertool"))
from retention import plan  # noqa: E402  (a server script: its modules import each other by name)

NOW = calendar.timegm(time.strptime("2026-11-20T12:00:00Z", "%Y-%m-%dT%H:%M:%SZ"))


def backup(backup_id: str, day: int, hour: int, label: str = "nightly", release: str | None = None,
           verified: bool | None = None) -> dict:
    return {"id": backup_id, "time": f"2026-11-{day:02d}T{hour:02d}:00:00Z", "label": label, "release": release,
            "verified": None if verified is None else {"ok": verified}}


def test_the_newest_n_are_kept_and_the_rest_removed_newest_first():
    found = [backup(f"b{i}", 10 + i, 3) for i in range(6)]
    kept, removed = plan(found, keep=2, daily_days=0, live_releases=set(), now=NOW)
    assert set(kept) == {"b5", "b4"} and removed == ["b3", "b2", "b1", "b0"]


def test_one_backup_per_day_is_kept_for_the_last_d_days_the_newest_of_each():
    found = [backup("d20a", 20, 1), backup("d20b", 20, 9), backup("d19a", 19, 2), backup("d19b", 19, 8),
             backup("d18", 18, 3), backup("d15", 15, 3)]
    kept, removed = plan(found, keep=1, daily_days=3, live_releases=set(), now=NOW)
    assert kept == {"d20b": "one of the newest 1", "d19b": "the newest of 2026-11-19",
                    "d18": "the newest of 2026-11-18"}
    assert removed == ["d20a", "d19a", "d15"]


def test_the_newest_verified_backup_is_never_removed_even_when_old():
    found = [backup("old", 1, 3, verified=True), backup("bad", 2, 3, verified=False), backup("new", 3, 3)]
    kept, removed = plan(found, keep=1, daily_days=0, live_releases=set(), now=NOW)
    assert set(kept) == {"new", "old"} and removed == ["bad"]


def test_a_deploy_backup_is_kept_while_its_release_can_be_rolled_back():
    found = [backup("r1-predeploy", 1, 3, "predeploy", "r1"), backup("r2-predeploy", 2, 3, "predeploy", "r2"),
             backup("manual-r2", 2, 4, "manual", "r2"), backup("new", 3, 3)]
    kept, removed = plan(found, keep=1, daily_days=0, live_releases={"r2"}, now=NOW)
    assert set(kept) == {"new", "r2-predeploy"} and removed == ["manual-r2", "r1-predeploy"]
