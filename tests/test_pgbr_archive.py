"""The archive's continuity as the pgbackrest check judges it (deploy/servertool/pgbr.py), on
WAL file names: a gap on a timeline, across a LOG boundary, and a new timeline after a restore."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "servertool"))
import pgbr  # noqa: E402  (a server script: its modules import each other by name)


def wal(timeline: int, number: int) -> str:
    return f"{timeline:08X}{number // 256:08X}{number % 256:08X}"


def found(*names: str) -> dict[int, set[int]]:
    segments: dict[int, set[int]] = {}
    for name in names:
        timeline, number = pgbr.segment_number(name)
        segments.setdefault(timeline, set()).add(number)
    return segments


def test_a_continuous_archive_across_a_log_boundary_and_a_new_timeline_misses_nothing():
    names = [wal(1, n) for n in range(250, 262)] + [wal(2, n) for n in range(261, 265)]
    assert pgbr.missing_segments(found(*names), wal(1, 252)) == []


def test_a_gap_and_a_missing_first_file_are_named():
    names = [wal(1, n) for n in (3, 4, 6, 7)]
    assert pgbr.missing_segments(found(*names), wal(1, 3)) == [wal(1, 5)]
    assert pgbr.missing_segments(found(*names), wal(1, 2)) == [wal(1, 2), wal(1, 5)]
    assert pgbr.missing_segments(found(wal(2, 9)), wal(1, 8)) == [wal(1, 8)]  # its timeline is gone
    assert pgbr.WAL.fullmatch(wal(1, 5) + "-" + "a" * 40 + ".lz4")
