"""Point-in-time restore of a team's database (issue 16). What exists so far is the plan: which point of the
replica a request names (a time, a transaction, the latest), refused with the nearest valid points when it lies
outside the restorable window. Restoring into a new volume is not built yet."""

from datetime import datetime

from teams.models import Team
from teams.permissions import Actor

from .replicas import replica_window
from .window import RestorableWindow, RestorePlan, latest_plan, plan_at_time, plan_for_txid


def plan_restore(team: Team, *, database: str, timestamp: datetime | None = None, txid: int | None = None,
                 actor: Actor) -> tuple[RestorableWindow, RestorePlan]:
    """The replica's window and what a restore to `timestamp`, `txid` or (neither) the latest point would
    restore. Changes nothing but the audit row of the read-only credentials it mints for `actor`. Raises
    window.OutsideWindow, window.EmptyReplica, replicas.UnreadableReplica, and ValueError for a bad name."""
    if timestamp is not None and txid is not None:
        raise ValueError("name a time or a transaction, not both")
    window = replica_window(team, database, actor=actor)
    if txid is not None:
        return window, plan_for_txid(window, txid)
    if timestamp is not None:
        return window, plan_at_time(window, timestamp)
    return window, latest_plan(window)
