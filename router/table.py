"""The routing table: what the router knows of each team, read from the database.

The one module of the router that reads the teams' and instances' models. A lookup is served from memory for at most `CLOUDCTL_ROUTER_TABLE_MAX_AGE` seconds (0.5 s), so a change
committed to the database (a team created, suspended, destroyed, moved to another port or Machine) is what the
router decides on within that bound, well inside the 1 s promised; a miss costs one indexed query.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from django.conf import settings

from instances.models import Instance
from teams.models import Team

from .decision import TeamEntry

ABSENT = object()
# Anyone can ask for any name under the teams' domain: past this many remembered reads, the oldest go.
MAX_ENTRIES = 10_000


def read_entry(slug: str) -> TeamEntry | None:
    """One query: the team by its slug, with its instance."""
    team = Team.objects.filter(slug=slug).select_related("instance").first()
    if team is None:
        return None
    instance = getattr(team, "instance", None)  # the missing reverse one-to-one is an AttributeError
    if instance is None:
        return TeamEntry(team_id=team.pk, slug=team.slug, active=team.is_active)
    resources = instance.resources or {}
    return TeamEntry(
        team_id=team.pk, slug=team.slug, active=team.is_active,
        instance_state=instance.state,
        # The local backend's own address for the instance; a Fly instance has an app and a Machine instead.
        upstream=resources.get("url", "") if "port" in resources else "",
        app=resources.get("app", ""), machine=resources.get("machine", ""),
        asleep=instance.state == Instance.State.STOPPED or instance.scaled_to_zero,
    )


class RoutingTable:
    """Thread-safe; `clock` is injectable so tests move time instead of waiting."""

    def __init__(self, *, max_age: float | None = None, clock: Callable[[], float] = time.monotonic,
                 read: Callable[[str], TeamEntry | None] = read_entry, max_entries: int = MAX_ENTRIES):
        self.max_age = settings.ROUTER_TABLE_MAX_AGE if max_age is None else max_age
        self._clock, self._read, self.max_entries = clock, read, max_entries
        # In the order they were read: the first is the oldest.
        self._entries: OrderedDict[str, tuple[float, TeamEntry | None]] = OrderedDict()
        self._lock = threading.Lock()

    def remembered(self) -> int:
        """How many reads it keeps (not `__len__`: an empty table must not be falsy)."""
        return len(self._entries)

    def cached(self, slug: str):
        """The entry if it is fresh enough, else `ABSENT` (the caller reads it, off the event loop)."""
        with self._lock:
            found = self._entries.get(slug)
        if found is not None and self._clock() - found[0] < self.max_age:
            return found[1]
        return ABSENT

    def lookup(self, slug: str) -> TeamEntry | None:
        entry = self.cached(slug)
        if entry is not ABSENT:
            return entry
        read_at = self._clock()
        entry = self._read(slug)
        with self._lock:
            self._entries[slug] = (read_at, entry)
            self._entries.move_to_end(slug)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry
