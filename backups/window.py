"""The restorable window of one database's Litestream 0.5 replica: a pure function of the replica's LTX files.

A replica is LTX files per level (on S3 `<replica>/<level as 4 hex digits>/<min txid>-<max txid>.ltx`): level 0 one
per sync batch (kept `l0-retention`, 5 minutes by default), levels 1-3 compactions of the level below (every 30 s,
5 min, 1 h by default), level 9 snapshots (every 24 h, kept the fleet's retention). Every file's header carries the
time of its last transaction (compaction keeps the newest input's). Restore replays whole files: a point it can
restore to is the end (max txid) of a file reached by a contiguous chain from the start or from a snapshot, so the
granularity is one sync batch where level-0 files remain and coarser further back.

The rules follow Litestream's restore plan (`CalcRestorePlan`, v0.5.17): `-txid X` succeeds only when X is such an
end; `-timestamp T` uses only files whose time is strictly before T and lands on the newest end they reach.
"""

import bisect
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

SNAPSHOT_LEVEL = 9
LTX_NAME = re.compile(r"(?P<min>[0-9a-f]{16})-(?P<max>[0-9a-f]{16})\.ltx")


@dataclass(frozen=True)
class LTXFile:
    level: int
    min_txid: int
    max_txid: int
    size: int
    # The time of the file's last transaction (its header's timestamp).
    created_at: datetime
    # The database's size after the file's last transaction (its header's page size times page count).
    database_bytes: int = 0


@dataclass(frozen=True)
class RestorePoint:
    txid: int
    time: datetime

    @property
    def txid_hex(self) -> str:
        """How Litestream writes a txid (`-txid` takes it so)."""
        return format_txid(self.txid)


@dataclass(frozen=True)
class RestorePlan:
    """What a restore to `point` downloads: the newest snapshot it may start from, then a contiguous chain."""

    point: RestorePoint
    files: tuple[LTXFile, ...]

    @property
    def download_bytes(self) -> int:
        return sum(file.size for file in self.files)

    @property
    def database_bytes(self) -> int:
        return self.files[-1].database_bytes


@dataclass(frozen=True)
class LevelSpan:
    """What one level holds: its files' times and the usual step between them (None with a single file)."""

    level: int
    files: int
    oldest: datetime
    newest: datetime
    step: timedelta | None


@dataclass(frozen=True)
class RestorableWindow:
    points: tuple[RestorePoint, ...]  # every restorable point, oldest first
    levels: tuple[LevelSpan, ...]
    files: tuple[LTXFile, ...]

    @property
    def oldest(self) -> RestorePoint:
        return self.points[0]

    @property
    def newest(self) -> RestorePoint:
        return self.points[-1]

    @property
    def replicated_txid(self) -> int:
        """The newest transaction any file holds: the newest point unless a gap (a lost object) cuts it off."""
        return max(file.max_txid for file in self.files)


class OutsideWindow(Exception):
    """A requested point the replica cannot restore to; `nearest` are the valid points closest to it."""

    def __init__(self, message: str, nearest: tuple[RestorePoint, ...]):
        super().__init__(message)
        self.nearest = nearest


class EmptyReplica(Exception):
    """The replica holds no restorable point (never replicated, or its files do not start a chain)."""


def format_txid(txid: int) -> str:
    return f"{txid:016x}"


def parse_txid(text: str) -> int:
    """A txid as Litestream prints it (hex, 16 digits or fewer); ValueError otherwise."""
    text = text.strip().lower()
    if not re.fullmatch(r"(0x)?[0-9a-f]{1,16}", text):
        raise ValueError(f"not a transaction id (hex, as `litestream ltx` prints it): {text!r}")
    txid = int(text.removeprefix("0x"), 16)
    if txid < 1:
        raise ValueError("transaction ids start at 1")
    return txid


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time with its zone (`2026-11-26T17:40:00Z`); ValueError otherwise: a time without a zone would
    be a guess."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO 8601 time (2026-11-26T17:40:00Z): {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z for UTC or an offset")
    return moment


def ltx_name_txids(name: str) -> tuple[int, int] | None:
    """(min, max) txid of an LTX file name, None for anything else."""
    match = LTX_NAME.fullmatch(name)
    return (int(match["min"], 16), int(match["max"], 16)) if match else None


def _reachable_points(files: list[LTXFile]) -> list[RestorePoint]:
    """Every restorable point, oldest first. A snapshot's end is one; another file's end is one when a reachable
    end (or the empty database, txid 0) lies in [its min - 1, its max): replaying it from there is contiguous.
    Files are taken by increasing end, so every end below the current file's is settled before it; at equal
    ends the lowest level's time is kept (compaction keeps its newest input's time, so they agree)."""
    ends = [0]
    points = []
    for file in sorted(files, key=lambda f: (f.max_txid, f.level)):
        if file.max_txid == ends[-1]:
            continue
        if file.level != SNAPSHOT_LEVEL:
            index = bisect.bisect_left(ends, file.min_txid - 1)
            if index == len(ends) or ends[index] >= file.max_txid:
                continue
        ends.append(file.max_txid)
        points.append(RestorePoint(file.max_txid, file.created_at))
    return points


def restore_plan(files: Iterable[LTXFile], *, txid: int | None = None, before: datetime | None = None) -> tuple[
        LTXFile, ...]:
    """Litestream's plan (`CalcRestorePlan`): of the files ending at or before `txid` and older than `before`,
    the newest snapshot, then again and again the file that extends the contiguous range furthest."""
    eligible = [file for file in files if (txid is None or file.max_txid <= txid)
                and (before is None or file.created_at < before)]
    snapshots = [file for file in eligible if file.level == SNAPSHOT_LEVEL]
    plan = [max(snapshots, key=lambda f: (f.min_txid, f.max_txid))] if snapshots else []
    current = plan[-1].max_txid if plan else 0
    others = [file for file in eligible if file.level != SNAPSHOT_LEVEL]
    while txid is None or current < txid:
        extending = [file for file in others if file.min_txid <= current + 1 and file.max_txid > current]
        if not extending:
            break
        best = max(extending, key=lambda f: (f.max_txid, -f.min_txid, f.level, -f.created_at.timestamp()))
        plan.append(best)
        current = best.max_txid
    return tuple(plan)


def _level_spans(files: list[LTXFile]) -> tuple[LevelSpan, ...]:
    spans = []
    for level in sorted({file.level for file in files}):
        times = sorted(file.created_at for file in files if file.level == level)
        steps = [later - earlier for earlier, later in zip(times, times[1:])]
        spans.append(LevelSpan(level, len(times), times[0], times[-1], statistics.median(steps) if steps else None))
    return tuple(spans)


def restorable_window(files: Iterable[LTXFile]) -> RestorableWindow:
    """Every point the replica can restore to, and what each level holds; EmptyReplica when there is none."""
    files = tuple(files)
    points = _reachable_points(list(files))
    if not points:
        raise EmptyReplica("the replica holds no restorable point")
    return RestorableWindow(points=tuple(points), levels=_level_spans(list(files)), files=files)


def _nearest(window: RestorableWindow, txid: int) -> tuple[RestorePoint, ...]:
    """The valid points on either side of `txid`."""
    index = bisect.bisect_left([point.txid for point in window.points], txid)
    return tuple(window.points[i] for i in (index - 1, index) if 0 <= i < len(window.points))


def _planned(window: RestorableWindow, plan: tuple[LTXFile, ...]) -> RestorePlan:
    """The plan with its point as the window lists it: a snapshot's own time is when it was taken, later than its
    last transaction's."""
    txids = [point.txid for point in window.points]
    return RestorePlan(window.points[bisect.bisect_left(txids, plan[-1].max_txid)], plan)


def plan_for_txid(window: RestorableWindow, txid: int) -> RestorePlan:
    """What `-txid` restores: only the end of a reachable file is a point; any other txid is refused."""
    if txid not in {point.txid for point in window.points}:
        raise OutsideWindow(f"transaction {format_txid(txid)} is not a restorable point of this replica",
                            _nearest(window, txid))
    return _planned(window, restore_plan(window.files, txid=txid))


def plan_at_time(window: RestorableWindow, moment: datetime) -> RestorePlan:
    """What `-timestamp` restores: the newest point reached by files older than `moment`. A moment after the
    newest point is refused too: the replica does not know the database's state then."""
    if moment > window.newest.time:
        raise OutsideWindow(f"{moment.isoformat()} is after the newest restorable point", (window.newest,))
    plan = restore_plan(window.files, before=moment)
    if not plan:
        raise OutsideWindow(f"{moment.isoformat()} is not after the oldest restorable point", (window.oldest,))
    return _planned(window, plan)


def latest_plan(window: RestorableWindow) -> RestorePlan:
    return _planned(window, restore_plan(window.files))
