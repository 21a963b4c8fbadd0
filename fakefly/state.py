"""The fake's records of Fly resources, how each renders as JSON, and the ids Fly gives them.

Machine states follow DOCS `machines/machine-states`: a request moves a Machine into a transient state
(`starting`, `stopping`, ...) and a scheduled `Transition` completes it after the action's simulated latency.
Transitions are applied lazily by `settle(now)`, so virtual time needs no background thread.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def millis(timestamp: float) -> int:
    return int(timestamp * 1000)


class Ids:
    """Fly-shaped ids from a seeded generator, so a seeded fake hands out the same ids on every run."""

    def __init__(self, rng: random.Random):
        self._rng = rng

    def _chars(self, alphabet: str, count: int) -> str:
        return "".join(self._rng.choice(alphabet) for _ in range(count))

    def ulid(self, now: float) -> str:
        """26 characters: 48 bits of milliseconds, 80 random bits, Crockford base32 (Machine versions, events)."""
        value = (millis(now) << 80) | self._rng.getrandbits(80)
        return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))

    def machine(self) -> str:
        return f"{self._rng.getrandbits(56):014x}"

    def volume(self) -> str:
        return "vol_" + self._chars(_BASE36, 16)

    def app(self) -> str:
        return self._chars(_BASE36, 16)

    def nonce(self) -> str:
        return f"{self._rng.getrandbits(48):012x}"


@dataclass
class Org:
    slug: str
    internal_numeric_id: int
    # Replay rules (DOCS networking/dynamic-request-routing): same-org replays across custom networks only once
    # enabled (`fly orgs cross-network-replays enable`), cross-org ones only from allowlisted orgs
    # (`fly orgs replay-sources add`).
    cross_network_replays: bool = False
    replay_sources: set[str] = field(default_factory=set)

    def to_json(self) -> dict:
        return {"name": self.slug, "slug": self.slug, "internal_numeric_id": self.internal_numeric_id}


@dataclass
class Secret:
    value: str
    created_at: float
    updated_at: float

    def to_json(self, name: str) -> dict:
        return {"name": name, "digest": hashlib.sha256(self.value.encode()).hexdigest()[:16],
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}


@dataclass
class AppRecord:
    id: str
    name: str
    org: Org
    network: str
    internal_numeric_id: int
    created_at: float
    secrets: dict[str, Secret] = field(default_factory=dict)
    secrets_version: int = 0
    # When each secrets version was set: a host sees a version only once it has propagated.
    secrets_set_at: dict[int, float] = field(default_factory=lambda: {0: 0.0})

    def secrets_version_seen(self, now: float, propagation: float) -> int:
        """The newest version a host has received by `now`."""
        return max(version for version, set_at in self.secrets_set_at.items() if set_at + propagation <= now)

    def to_json(self, *, machine_count: int, volume_count: int, running: bool) -> dict:
        return {"id": self.id, "name": self.name, "status": "deployed" if running else "pending",
                "network": self.network, "machine_count": machine_count, "volume_count": volume_count,
                "internal_numeric_id": self.internal_numeric_id, "organization": self.org.to_json()}


@dataclass
class VolumeRecord:
    id: str
    app_name: str
    name: str
    region: str
    zone: str
    size_gb: int
    encrypted: bool
    snapshot_retention: int
    auto_backup_enabled: bool
    created_at: float
    attached_machine_id: str | None = None
    state: str = "created"

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "state": self.state, "size_gb": self.size_gb,
                "region": self.region, "zone": self.zone, "encrypted": self.encrypted,
                "attached_machine_id": self.attached_machine_id, "attached_alloc_id": None,
                "created_at": iso(self.created_at), "snapshot_retention": self.snapshot_retention,
                "auto_backup_enabled": self.auto_backup_enabled, "host_status": "ok", "type": "local",
                "bytes_total": self.size_gb * 1024**3, "bytes_used": 0, "fstype": "ext4"}


@dataclass
class LeaseRecord:
    nonce: str
    owner: str
    description: str
    expires_at: float
    version: str

    def to_json(self) -> dict:
        return {"nonce": self.nonce, "expires_at": int(self.expires_at), "owner": self.owner,
                "description": self.description, "version": self.version}


@dataclass
class Transition:
    at: float
    state: str
    event: str
    effect: Callable[[], None] | None = None


def image_ref(image: str) -> dict:
    """`registry.fly.io/team:v42` -> registry, repository, tag; the digest stands in for the pulled image's."""
    name, _, digest = image.partition("@")
    first, _, rest = name.partition("/")
    registry, path = (first, rest) if rest and ("." in first or ":" in first) else ("docker.io", name)
    repository, _, tag = path.partition(":")
    return {"registry": registry, "repository": repository, "tag": tag or ("" if digest else "latest"),
            "digest": digest or "sha256:" + hashlib.sha256(image.encode()).hexdigest(), "labels": {}}


@dataclass
class MachineRecord:
    id: str
    app_name: str
    name: str
    region: str
    config: dict
    instance_id: str
    private_ip: str
    created_at: float
    visible_after: float
    state: str = "created"
    updated_at: float = 0.0
    events: list[dict] = field(default_factory=list)
    lease: LeaseRecord | None = None
    transitions: list[Transition] = field(default_factory=list)
    # The app's secrets as of the Machine's create or last update: Fly hands a Machine no later ones.
    secrets_version: int = 0
    # How the org-wide listing saw it over time: (from when, updated_at, its org listing entry).
    org_views: list[tuple[float, float, dict]] = field(default_factory=list)
    # The last request Fly's proxy routed to it (`FakeFly.proxy_request`): autostop counts idleness from here.
    last_request_at: float = 0.0

    @property
    def mounted_volume_ids(self) -> list[str]:
        return [mount["volume"] for mount in self.config.get("mounts", []) if "volume" in mount]

    def record_event(self, event_id: str, kind: str, status: str, at: float) -> None:
        self.events.append({"id": event_id, "type": kind, "status": status, "source": "user",
                            "timestamp": millis(at)})

    def begin(self, now: float, transient: str, *steps: Transition) -> None:
        """Enter `transient` now; `steps` (replacing whatever was pending) finish the change later."""
        self.state = transient
        self.updated_at = now
        self.transitions = list(steps)
        self.remember(now)

    def remember(self, at: float) -> None:
        """Record how the org-wide listing shows the Machine from `at` on."""
        self.org_views.append((at, self.updated_at, self.to_org_json()))

    def org_view(self, at: float) -> tuple[float, dict] | None:
        """(updated_at, entry) as the org-wide listing showed the Machine at `at`, None if it did not exist yet.
        Views older than the one in force at `at` are forgotten (`at` only moves forward)."""
        current = [index for index, (since, _, _) in enumerate(self.org_views) if since <= at]
        if not current:
            return None
        del self.org_views[:current[-1]]
        return self.org_views[0][1], self.org_views[0][2]

    def settle(self, now: float, new_event_id: Callable[[float], str]) -> None:
        while self.transitions and self.transitions[0].at <= now:
            transition = self.transitions.pop(0)
            self.state = transition.state
            self.updated_at = transition.at
            if transition.effect is not None:
                transition.effect()
            self.record_event(new_event_id(transition.at), transition.event, transition.state, transition.at)
            self.remember(transition.at)

    @property
    def next_transition_at(self) -> float | None:
        return self.transitions[0].at if self.transitions else None

    def to_json(self, *, summary: bool = False) -> dict:
        body = {"id": self.id, "name": self.name, "state": self.state, "region": self.region,
                "instance_id": self.instance_id, "private_ip": self.private_ip,
                "image_ref": image_ref(self.config["image"]),
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}
        if not summary:
            body |= {"config": self.config, "events": self.events[::-1], "host_status": "ok"}
        return body

    def to_org_json(self) -> dict:
        return {"id": self.id, "name": self.name, "state": self.state, "region": self.region,
                "app_name": self.app_name, "instance_id": self.instance_id, "version": self.instance_id,
                "private_ip": self.private_ip, "created_at": iso(self.created_at),
                "updated_at": iso(self.updated_at),
                "config": {key: self.config[key] for key in ("image", "guest", "metadata") if key in self.config}}
