"""The restorable window as a pure function of a replica's LTX files (backups/window.py): which points a restore
can land on, what `-timestamp` and `-txid` restore, and the refusals naming the nearest valid points."""

from datetime import UTC, datetime, timedelta

import pytest

from backups.window import (
    SNAPSHOT_LEVEL, EmptyReplica, LTXFile, OutsideWindow, latest_plan, ltx_name_txids, parse_txid, plan_at_time,
    plan_for_txid, restorable_window,
)

BASE = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def ltx(level: int, min_txid: int, max_txid: int, seconds: float, size: int = 100) -> LTXFile:
    return LTXFile(level, min_txid, max_txid, size, at(seconds), database_bytes=4096 * max_txid)


# Txids 1-5 committed one a second from BASE. Level-0 retention already removed 1 and 2, which level 1
# compacted with 3 (a compacted file keeps its newest input's time); a snapshot of txid 4 was taken at +10 s.
REPLICA = [
    ltx(1, 1, 3, 2, size=300),
    ltx(0, 3, 3, 2),
    ltx(0, 4, 4, 3),
    ltx(0, 5, 5, 4),
    ltx(SNAPSHOT_LEVEL, 1, 4, 10, size=4000),
]


def points(window):
    return [(point.txid, point.time) for point in window.points]


def test_points_are_the_ends_of_files_reached_contiguously():
    window = restorable_window(REPLICA)
    assert points(window) == [(3, at(2)), (4, at(3)), (5, at(4))]  # a snapshot's point keeps its commit's time
    assert (window.oldest.txid, window.newest.txid) == (3, 5)


def test_a_gap_ends_the_window_where_the_chain_stops():
    window = restorable_window([ltx(0, 1, 2, 0), ltx(0, 5, 6, 3)])
    assert points(window) == [(2, at(0))]


def test_a_snapshot_starts_a_chain_on_its_own():
    window = restorable_window([ltx(SNAPSHOT_LEVEL, 1, 40, 30), ltx(0, 41, 41, 31), ltx(0, 43, 43, 33)])
    assert [point.txid for point in window.points] == [40, 41]


def test_an_empty_replica_has_no_window():
    with pytest.raises(EmptyReplica):
        restorable_window([])
    with pytest.raises(EmptyReplica):
        restorable_window([ltx(0, 7, 8, 0)])  # its start was deleted: nothing to replay it onto


def test_a_time_restores_the_newest_point_committed_before_it():
    window = restorable_window(REPLICA)
    plan = plan_at_time(window, at(2.5))
    assert (plan.point.txid, plan.point.time) == (3, at(2))
    assert plan.files == (REPLICA[0],)
    later = plan_at_time(window, at(3.5))
    assert later.point.txid == 4
    assert later.files == (REPLICA[0], REPLICA[2])  # the snapshot is newer than the time asked for
    assert plan_at_time(window, at(4)).point.txid == 4  # strictly before, as Litestream compares


def test_a_time_outside_the_window_is_refused_with_the_nearest_points():
    window = restorable_window(REPLICA)
    with pytest.raises(OutsideWindow) as before:
        plan_at_time(window, at(1))
    assert [point.txid for point in before.value.nearest] == [3]
    with pytest.raises(OutsideWindow) as after:
        plan_at_time(window, at(60))
    assert [point.txid for point in after.value.nearest] == [5]
    assert "after the newest" in str(after.value)


def test_a_txid_must_be_a_point():
    window = restorable_window(REPLICA)
    plan = plan_for_txid(window, 4)
    assert plan.files == (REPLICA[4],)  # Litestream starts from the newest snapshot at or before it
    assert (plan.point.time, plan.download_bytes, plan.database_bytes) == (at(3), 4000, 4096 * 4)
    gappy = restorable_window([ltx(1, 1, 10, 5), ltx(1, 11, 20, 35), ltx(0, 21, 21, 36)])
    with pytest.raises(OutsideWindow) as inside_a_file:
        plan_for_txid(gappy, 15)
    assert [point.txid for point in inside_a_file.value.nearest] == [10, 20]
    with pytest.raises(OutsideWindow) as too_new:
        plan_for_txid(gappy, 22)
    assert [point.txid for point in too_new.value.nearest] == [21]


def test_latest_plan_and_sizes():
    plan = latest_plan(restorable_window(REPLICA))
    assert plan.point.txid == 5
    assert plan.files == (REPLICA[4], REPLICA[3])
    assert (plan.download_bytes, plan.database_bytes) == (4100, 4096 * 5)


def test_levels_report_their_granularity():
    files = [ltx(1, 1, 30, 30), ltx(1, 31, 60, 60), ltx(1, 61, 90, 90)] + [ltx(0, n, n, n) for n in range(91, 96)]
    window = restorable_window(files)
    by_level = {span.level: span for span in window.levels}
    assert (by_level[0].files, by_level[0].step) == (5, timedelta(seconds=1))
    assert (by_level[1].files, by_level[1].step, by_level[1].oldest) == (3, timedelta(seconds=30), at(30))
    assert len(window.points) == 3 + 5


def test_names_and_txids_as_litestream_writes_them():
    assert ltx_name_txids("0000000000000001-00000000000000ff.ltx") == (1, 255)
    assert ltx_name_txids("0000000000000001-00000000000000ff.ltx.tmp") is None
    assert ltx_name_txids("1-2.ltx") is None
    assert parse_txid("00000000000000ff") == parse_txid("ff") == parse_txid("0xFF") == 255
    for bad in ("", "0", "xyz", "1" * 17, "-1"):
        with pytest.raises(ValueError):
            parse_txid(bad)
