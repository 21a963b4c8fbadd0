"""The routing decision, pure: a request's `Host` -> what the router does with it.

Both executors take it from here: the Fly router answers a `Route` with a replay to the team's app and Machine,
the embedded router (`manage.py dev`) forwards to the local instance; every other decision is a page the router
serves itself without touching any tenant. The routing table is passed in (`router/table.py` reads it from the
database), so the decision itself reads nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from teams.routing import routing_secret

# A DNS label, as a team slug is (teams.models.SLUG_PATTERN).
LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Punycode: a name that shows as a look-alike in a browser's address bar is routed to nobody.
IDNA_PREFIX = "xn--"


@dataclass(frozen=True)
class TeamEntry:
    """One team as the routing table holds it (router/table.py)."""

    team_id: int
    slug: str
    active: bool
    # None: no instance row yet.
    instance_state: str | None = None
    # Where the instance answers: the local backend's `http://127.0.0.1:<port>/`, or Fly's app and Machine.
    upstream: str = ""
    app: str = ""
    machine: str = ""
    # Stopped, or exited after its idle timeout: the embedded router wakes it on a request.
    asleep: bool = False


@dataclass(frozen=True)
class Route:
    team_id: int
    slug: str
    hostname: str
    secret: str = field(repr=False)
    upstream: str
    app: str
    machine: str
    asleep: bool


@dataclass(frozen=True)
class NotFound:
    """No team has this name (or the name is not one the router serves)."""


@dataclass(frozen=True)
class Suspended:
    slug: str


@dataclass(frozen=True)
class SettingUp:
    slug: str


@dataclass(frozen=True)
class Failed:
    slug: str


Decision = Route | NotFound | Suspended | SettingUp | Failed

# Instance states (teams.models.Instance.State) by what the router does.
SETTING_UP_STATES = frozenset({"pending", "provisioning"})
GONE_STATES = frozenset({"destroying", "destroyed"})
FAILED_STATE = "failed"


def team_slug(host: str | bytes | None, domain: str) -> str | None:
    """The slug a `Host` names under `domain`, or None: lowercase, one trailing dot and a port dropped; anything
    non-ASCII, an IP literal, a port that is not a number, or not exactly `<label>.<domain>` names no team."""
    if host is None:
        return None
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not host.isascii() or host != host.strip() or not host:
        return None
    host = host.lower()
    if host.startswith("["):
        return None
    name, colon, port = host.rpartition(":")
    if colon:
        if not port.isdigit() or not 0 < int(port) < 65536:
            return None
        host = name
    if host.endswith("."):
        host = host[:-1]
    suffix = "." + domain.lower().rstrip(".")
    if not host.endswith(suffix):
        return None
    label = host[: -len(suffix)]
    if not LABEL.match(label) or label.startswith(IDNA_PREFIX):
        return None
    return label


def decide(host: str | bytes | None, domain: str, lookup: Callable[[str], TeamEntry | None]) -> Decision:
    slug = team_slug(host, domain)
    entry = lookup(slug) if slug is not None else None
    return decide_entry(entry, domain)


def decide_entry(entry: TeamEntry | None, domain: str) -> Decision:
    """The decision for a team as the table holds it (None: no such team)."""
    if entry is None or entry.instance_state in GONE_STATES:
        return NotFound()
    if not entry.active:
        return Suspended(entry.slug)
    if entry.instance_state == FAILED_STATE:
        return Failed(entry.slug)
    # A team whose instance never answered yet is being set up; one that did (it has an upstream) is starting
    # again (a wake, a restart, a deploy): the router holds its requests instead.
    if entry.instance_state is None or (entry.instance_state in SETTING_UP_STATES
                                        and not (entry.upstream or entry.machine)):
        return SettingUp(entry.slug)
    return Route(team_id=entry.team_id, slug=entry.slug, hostname=f"{entry.slug}.{domain.lower().rstrip('.')}",
                 secret=routing_secret(entry.team_id), upstream=entry.upstream,
                 app=entry.app, machine=entry.machine, asleep=entry.asleep)


def control_plane_cookie_present(cookie_header: str, names: frozenset[str]) -> bool:
    """Whether a `Cookie` header carries one of the control plane's cookies: it reaches a team's name only when
    the control plane's cookie domain covers the teams' domain. The router then drops the whole header (Fly's
    replay transform can delete a header, not edit it), so no instance ever sees one."""
    for pair in cookie_header.split(";"):
        name = pair.partition("=")[0].strip()
        if name in names:
            return True
    return False
