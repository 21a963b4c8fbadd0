"""A stateful fake of the Fly Machines API (the parts cloudctl uses), as a WSGI application.

    fake = FakeFly(clock=VirtualClock())                        # in-process, instant and deterministic
    http = httpx.Client(base_url="https://api.machines.dev/v1", transport=fake.transport())
    url, stop = fakefly.serve(FakeFly())                        # or over real HTTP on 127.0.0.1

Every request is checked against the OpenAPI document (`spec.py`): one that violates it is answered 400 and
kept in `fake.refused`, so tests can assert the client never sent one. Every response the fake produces is
checked as well; a violation raises `SpecViolation` (a bug in the fake, never hidden).

Behaviour follows the reference (`fly-machines-api.md`) and, where the spec is silent, what Fly really does
(each with its source in `docs/fly.md`): no check results right after a start, secrets that reach hosts
eventually, stops up to `stop_config.timeout`, autostop and autostart (`proxy_request`), a lagging org-wide
listing, app deletion finished after its 202, Fly's guest sizes and regions, certificates validated against a
fake DNS (`dns_set`) and issued some time after their records are right (`certificates.py`), IP assignments
(none by default). Where Fly's answer is undocumented the fake uses flyd's style, `412 failed_precondition: ...`
for requests the current state forbids and `409 aborted: ...` for lease conflicts. Inspection for tests: `apps`,
`deleting_apps`, `volumes`, `machines`, `machine(id)`, `certificates`, `ip_assignments`, `calls` (per action),
`throttled_count` (429s sent), `refused`, `lapsed_leases`.

Fly's proxy (`proxy.FlyProxy`) asks the state here where a request goes: `app_for_hostname`, `app_for_flycast`,
`replay_refusal` (the org settings `enable_cross_network_replays` and `allow_replay_source` change it) and
`route` (picks and wakes a Machine).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import logging
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import httpx

from .certificates import (
    HOSTNAME, IP_TYPES, SHARED_V4, CertificateRecord, FakeDNS, IPAssignmentRecord, dns_name,
)
from .clock import SystemClock, VirtualClock
from .faults import Fault, FaultPlan, HostFull, NotVisible, ResponseLost, SilentRevert, Unavailable
from .ratelimit import Throttle
from .spec import SpecViolation, load_spec
from .state import AppRecord, Ids, LeaseRecord, MachineRecord, Org, Secret, Transition, VolumeRecord, iso, millis

logger = logging.getLogger("fakefly")

API_PREFIX = "/v1"
WAIT_CAP_SECONDS = 60  # Fly's wait blocks at most this long, then answers 408
MAX_ORG_PAGE = 1000
RUNNING_STATES = frozenset({"starting", "started", "updating"})
SETTLED_STATES = frozenset({"created", "started", "stopped", "suspended", "failed", "destroyed"})
NETWORK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")  # DOCS networking/custom-private-networks

Seconds = float | tuple[float, float]

# Fly's regions (DOCS reference/regions, `GET /platform/regions`): anything else is refused.
REGIONS = frozenset({"ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra", "gdl", "gig",
                     "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord", "otp", "phx", "qro", "scl",
                     "sea", "sin", "sjc", "syd", "waw", "yul", "yyz"})
# Memory per CPU each CPU kind allows, in MB, and its CPU counts (DOCS machines/guides-examples/machine-sizing):
# shared-cpu 256 MB to 2 GB per CPU, performance 2 GB to 8 GB per CPU, in multiples of 256 MB.
GUEST_SIZES = {"shared": ((256, 2048), (1, 2, 4, 6, 8)), "performance": ((2048, 8192), (1, 2, 4, 8, 16))}


@dataclass(frozen=True)
class Latencies:
    """Simulated seconds per action, typical of Fly, multiplied by FakeFly's `time_scale`; a (low, high) pair is
    drawn uniformly from the fake's seed. Creates and secrets take this long to answer; Machine lifecycle calls
    answer at once and the Machine reaches its new state this long afterwards (observe it with `wait`).
    A launched Machine takes `create_machine` to be created, then `start` to be started."""

    create_app: Seconds = 0.3
    create_volume: Seconds = 0.5
    set_secrets: Seconds = 0.3
    create_machine: Seconds = (1.0, 2.0)
    start: Seconds = 1.0
    # A stop lasts as long as the process takes to exit on its signal (Litestream's last sync, here), up to
    # the stop's timeout (see `_stop_seconds`).
    stop: Seconds = 3.0
    suspend: Seconds = 2.0
    update: Seconds = 2.0
    destroy: Seconds = 0.5
    delete_app: Seconds = (1.0, 5.0)
    # A started Machine has no check results at all until its checks first run (flyctl PR #4952, "Machine.Checks
    # (runtime status) is empty for freshly-launched machines"): Fly runs each check `grace_period` after the
    # start (DOCS reference/configuration, services.checks), and the run itself takes this long more. Read on
    # every GET, so give one value, not a range.
    health: float = 1.0
    # Secrets reach the hosts eventually: a Machine created or updated without `min_secrets_version` boots with
    # the newest version that has reached its host, possibly the previous one (reference section 9: "pass the
    # returned version as min_secrets_version on create/update so the host waits for it"; flyctl always does).
    secrets_propagation: float = 10.0
    # Fly's proxy stops a Machine whose service has `autostop` once it has had no request for a while (it looks
    # every few minutes: DOCS reference/fly-proxy-autostop-autostart), and `autostart` wakes it on the next
    # request (`FakeFly.proxy_request`). None: Machines never stop by themselves.
    autostop_idle: float | None = 300.0
    # The org-wide listing shows the Machines as they were this long ago (DOCS: "a point in time").
    org_listing_lag: Seconds = 2.0
    # Added to every answer: the network round trip to api.machines.dev (0 keeps in-process tests instant).
    request: Seconds = 0.0
    # A certificate is issued this long after its DNS records are first seen right (Let's Encrypt's round trip).
    certificate_issue: float = 10.0


# The actions whose latency delays the answer itself (the others schedule a Transition).
_ANSWERED_AFTER_LATENCY = frozenset({"create_app", "create_volume", "set_secrets", "create_machine"})


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # the path as the OpenAPI document spells it, below /v1
    action: str  # the name used for call counts, rate limits and fault injection
    pattern: re.Pattern = field(compare=False)


def _route(method: str, template: str, action: str) -> Route:
    segments = (f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
                for part in template.split("/"))
    return Route(method, template, action, re.compile("/".join(segments)))


_MACHINE = "/apps/{app_name}/machines/{machine_id}"
ROUTES = (
    _route("GET", "/apps", "list_apps"),
    _route("POST", "/apps", "create_app"),
    _route("GET", "/apps/{app_name}", "get_app"),
    _route("DELETE", "/apps/{app_name}", "delete_app"),
    _route("GET", "/apps/{app_name}/volumes", "list_volumes"),
    _route("POST", "/apps/{app_name}/volumes", "create_volume"),
    _route("GET", "/apps/{app_name}/volumes/{volume_id}", "get_volume"),
    _route("DELETE", "/apps/{app_name}/volumes/{volume_id}", "delete_volume"),
    _route("POST", "/apps/{app_name}/secrets", "set_secrets"),
    _route("GET", "/apps/{app_name}/machines", "list_machines"),
    _route("POST", "/apps/{app_name}/machines", "create_machine"),
    _route("GET", _MACHINE, "get_machine"),
    _route("POST", _MACHINE, "update_machine"),
    _route("DELETE", _MACHINE, "destroy_machine"),
    _route("POST", _MACHINE + "/start", "start_machine"),
    _route("POST", _MACHINE + "/stop", "stop_machine"),
    _route("POST", _MACHINE + "/suspend", "suspend_machine"),
    _route("GET", _MACHINE + "/wait", "wait_machine"),
    _route("GET", _MACHINE + "/lease", "get_lease"),
    _route("POST", _MACHINE + "/lease", "acquire_lease"),
    _route("DELETE", _MACHINE + "/lease", "release_lease"),
    _route("POST", _MACHINE + "/metadata/{key}", "set_metadata"),
    _route("DELETE", _MACHINE + "/metadata/{key}", "delete_metadata"),
    _route("GET", "/orgs/{org_slug}/machines", "list_org_machines"),
    _route("GET", "/apps/{app_name}/certificates", "list_certificates"),
    _route("POST", "/apps/{app_name}/certificates/acme", "create_acme_certificate"),
    _route("GET", "/apps/{app_name}/certificates/{hostname}", "get_certificate"),
    _route("DELETE", "/apps/{app_name}/certificates/{hostname}", "delete_certificate"),
    _route("POST", "/apps/{app_name}/certificates/{hostname}/check", "check_certificate"),
    _route("GET", "/apps/{app_name}/ip_assignments", "list_ip_assignments"),
    _route("POST", "/apps/{app_name}/ip_assignments", "assign_ip"),
    _route("DELETE", "/apps/{app_name}/ip_assignments/{ip}", "release_ip"),
)
# Everything else the document describes answers 501, so a missing feature is not mistaken for a wrong path.
_UNIMPLEMENTED = tuple(_route(method.upper(), template, "unimplemented")
                       for template, operations in load_spec().document["paths"].items()
                       for method in operations if method != "parameters")


@dataclass(frozen=True)
class ProxyRoute:
    """Where Fly's proxy delivers a request: the Machine, its region and the internal port of the service that
    publishes the public port; `preferred_unavailable` is the `prefer_instance` it could not use."""

    machine_id: str
    app_name: str
    region: str
    internal_port: int
    preferred_unavailable: str | None = None


class NoRoute(Exception):
    """The proxy found no Machine for a request: `reason` is `no_candidate` or `timeout` (`fly-replay-failed`'s
    words)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# Fly's region aliases for `fly-replay: region=` (DOCS networking/dynamic-request-routing).
_US = frozenset({"atl", "bos", "den", "dfw", "ewr", "iad", "lax", "mia", "ord", "phx", "sea", "sjc"})
REGION_ALIASES = {
    "us": _US, "usa": _US, "na": _US | {"yul", "yyz", "gdl", "qro"},
    "eu": frozenset({"ams", "arn", "cdg", "fra", "lhr", "mad", "otp", "waw"}),
    "sa": frozenset({"bog", "eze", "gig", "gru", "scl"}),
    "apac": frozenset({"bom", "hkg", "nrt", "sin", "syd"}),
}


def region_rank(region: str, wanted: tuple[str, ...]) -> int:
    """The position of the first entry of `wanted` (codes, aliases, `any`) that `region` matches."""
    for rank, entry in enumerate(wanted):
        if entry == "any" or entry == region or region in REGION_ALIASES.get(entry, ()):
            return rank
    return len(wanted)


def region_matches(region: str, wanted: tuple[str, ...]) -> bool:
    return not wanted or region_rank(region, wanted) < len(wanted)


def _service_on(machine: MachineRecord, port: int) -> dict | None:
    """The Machine's service that publishes public `port`, if any."""
    return next((service for service in machine.config.get("services", [])
                 if any(entry.get("port") == port for entry in service.get("ports", []))), None)


@dataclass(frozen=True)
class Refusal:
    """A request fakefly refused as invalid (spec or documented rule): always a client bug."""

    method: str
    path: str
    errors: tuple[str, ...]
    body: Any


@dataclass
class Reply:
    status: int
    body: Any = None
    schema: str | None = None  # a fakefly.* schema where the document declares none for this answer


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code

    def reply(self) -> Reply:
        return Reply(self.status, {"error": str(self)} | ({"status": self.code} if self.code else {}))


class ClientGone(Exception):
    """The connection closed before the whole body arrived (a client killed mid-request)."""


class Refused(Exception):
    """A handler's verdict that the request breaks a documented rule the schemas cannot express."""


@dataclass
class Call:
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any
    nonce: str | None
    owner: str
    faults: list[Fault]

    def first(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[0]

    def flag(self, name: str) -> bool:
        return self.first(name, "false").lower() in ("1", "t", "true")


def _first(faults: list[Fault], kind: type) -> Any:
    return next((fault for fault in faults if isinstance(fault, kind)), None)


def _rate_key(params: dict[str, str], query: dict[str, list[str]], body: Any) -> str:
    for name in ("machine_id", "volume_id", "app_name", "org_slug"):
        if name in params:
            return params[name]
    # POST /apps is limited per app it creates, GET /apps per org it lists.
    if isinstance(body, dict) and isinstance(body.get("name"), str):
        return body["name"]
    return query.get("org_slug", [""])[0]


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def duration_seconds(value: str) -> float:
    """A Go duration as Fly's config spells them ("20s", "1m30s", "500ms") in seconds."""
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise Refused(f"{value!r} is not a duration like 30s or 1m")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _check_region(region: str) -> None:
    if region not in REGIONS:
        raise ApiError(400, f"region {region!r} not found")


def _check_guest(guest: dict, where: str) -> None:
    """A size Fly offers: memory per CPU within the CPU kind's range, a CPU count it sells."""
    kind, cpus, memory = guest.get("cpu_kind", "shared"), guest.get("cpus", 1), guest.get("memory_mb", 256)
    if kind not in GUEST_SIZES:
        raise Refused(f"{where}.cpu_kind: {kind!r} is not one of {sorted(GUEST_SIZES)}")
    (low, high), counts = GUEST_SIZES[kind]
    if cpus not in counts:
        raise Refused(f"{where}.cpus: {kind} Machines have {counts} CPUs, not {cpus}")
    if memory % 256 or not low * cpus <= memory <= high * cpus:
        raise Refused(f"{where}.memory_mb: {memory} MB for {cpus} {kind} CPUs; Fly allows {low * cpus} to "
                      f"{high * cpus} MB in multiples of 256")


def _normalized_config(config: dict) -> dict:
    """The config as Fly stores and returns it (after checking its guest size): autostop "off"/"stop" as
    false/true, a default guest."""
    _check_guest(config.get("guest", {}), "config.guest")
    config = copy.deepcopy(config)
    for service in config.get("services", []):
        if service.get("autostop") in ("off", "stop"):
            service["autostop"] = service["autostop"] == "stop"
    config.setdefault("guest", {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256})
    return config


class FakeFly:
    def __init__(self, *, clock: SystemClock | VirtualClock | None = None, orgs: tuple[str, ...] = ("personal",),
                 foreign_apps: tuple[str, ...] = (), seed: int = 0, latencies: Latencies = Latencies(),
                 time_scale: float = 1.0, rate_limits: bool = True, lease_envelope: bool = True,
                 org_page_cap: int | None = None, unhealthy_images: tuple[str, ...] = (),
                 check_responses: bool = True):
        """`foreign_apps`: names taken by someone else's org (403 on GET, 422 name_taken on create).
        `unhealthy_images`: Machines running these start, but their service checks turn `critical`.
        `check_responses`: validate the fake's own answers too (the tests do; a benchmark may spare the CPU).
        `lease_envelope`: answer leases as the docs show, `{"status","data":{...}}`, or else flat as the spec.
        `org_page_cap`: org-wide listing pages hold at most this many, whatever `limit` asks (Fly: advisory)."""
        self.clock = clock or SystemClock()
        self.latencies = latencies
        self.time_scale = time_scale
        self.rate_limits = rate_limits
        self.lease_envelope = lease_envelope
        self.org_page_cap = org_page_cap
        self.orgs = {slug: Org(slug, number) for number, slug in enumerate(orgs, start=1)}
        self.foreign_apps = set(foreign_apps)
        self.unhealthy_images = set(unhealthy_images)
        self.check_responses = check_responses
        self.apps: dict[str, AppRecord] = {}
        # Apps whose deletion was accepted (202) and is still under way, with when it finishes: until then
        # their name stays taken and reads still see them.
        self.deleting_apps: dict[str, tuple[AppRecord, float]] = {}
        self.volumes: dict[str, VolumeRecord] = {}
        self.machines: dict[str, MachineRecord] = {}
        self.certificates: dict[str, CertificateRecord] = {}  # by hostname: a hostname belongs to one app
        self.ip_assignments: list[IPAssignmentRecord] = []  # the shared IPv4 appears once per app holding it
        self.dns = FakeDNS()
        self.calls: Counter[str] = Counter()
        self.throttled_count = 0
        self.lapsed_leases: list[tuple[str, LeaseRecord]] = []  # (machine id, lease) that expired unreleased
        self.refused: list[Refusal] = []
        self._rng = random.Random(seed)
        self._ids = Ids(self._rng)
        self._faults = FaultPlan(self._rng)
        self._throttle = Throttle()
        self._route_turn = 0  # the proxy's round robin
        self._serials = itertools.count(1)  # Fly's internal numeric ids and private address suffixes
        self._spec = load_spec()
        # One lock for all state; a Condition so `wait` requests can sleep until another request changes it.
        self._lock = threading.Condition()

    # --- for tests ---------------------------------------------------------------------------------------

    def transport(self) -> httpx.BaseTransport:
        """An httpx transport that serves requests from this fake in the calling thread."""
        return httpx.WSGITransport(app=self)

    def inject(self, action: str, fault: Fault, *, calls=None, probability: float = 0.0) -> None:
        """See `fakefly.faults`."""
        with self._lock:
            self._faults.inject(action, fault, calls=calls, probability=probability)

    def dns_set(self, name: str, record_type: str, *values: str) -> None:
        """What the world's DNS answers for `name` from now on (no values: nothing); certificates validate on it."""
        with self._lock:
            self.dns.set(name, record_type, *values)

    def set_certificate_expiry(self, hostname: str, expires_at: float) -> None:
        """Moves an issued certificate's expiry (epoch seconds), to test warnings about it."""
        with self._lock:
            certificate = self._validated(self.certificates[dns_name(hostname)])
            if certificate.issued_at is None:
                raise ValueError(f"the certificate for {hostname} is not issued yet")
            certificate.expires_at = expires_at

    def enable_cross_network_replays(self, org_slug: str, enabled: bool = True) -> None:
        """`fly orgs cross-network-replays enable|disable --org <org>` (off by default, as on Fly)."""
        with self._lock:
            self.orgs[org_slug].cross_network_replays = enabled

    def allow_replay_source(self, target_org: str, source_org: str) -> None:
        """`fly orgs replay-sources add --org <target_org> <source_org>`: apps of `source_org` may replay into
        apps of `target_org`."""
        with self._lock:
            self.orgs[target_org].replay_sources.add(source_org)

    def machine(self, machine_id: str) -> MachineRecord:
        """The Machine with its scheduled transitions applied up to now."""
        with self._lock:
            self._settle()
            return self.machines[machine_id]

    # --- WSGI ----------------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        with self._lock:
            request_id = f"{self._ids.ulid(self.clock.now())}-ord"
        route, reply = self._respond(environ, method, path)
        if route is not None and self.check_responses:
            errors = self._spec.response_errors(method, route.template, reply.status, reply.body, reply.schema)
            if errors:
                raise SpecViolation(f"fakefly answered {method} {path} with {reply.status} {reply.body!r}: {errors}")
        logger.debug("%s %s -> %s (%s)", method, path, reply.status, request_id)
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        headers = [("fly-request-id", request_id)]
        if payload:
            headers.append(("Content-Type", "application/json"))
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", headers)
        return [payload]

    def _respond(self, environ: dict, method: str, path: str) -> tuple[Route | None, Reply]:
        route, params = self._match(method, path.removeprefix(API_PREFIX) if path.startswith(API_PREFIX) else "")
        if route is None:
            return None, ApiError(404, f"no route for {method} {path}").reply()
        if route.action == "unimplemented":
            return route, ApiError(501, f"fakefly does not implement {method} {route.template}").reply()
        with self._lock:
            self.calls[route.action] += 1
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme not in ("Bearer", "FlyV1") or not token:
            return route, ApiError(401, "unauthorized").reply()
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        try:
            body = self._read_json(environ)
        except ClientGone:
            # No request arrived (its client died between headers and body): nothing to refuse or carry out.
            return route, ApiError(400, "incomplete body").reply()
        except ValueError as error:
            return route, self._refuse(method, path, [f"(body): not JSON ({error})"], None)

        with self._lock:
            if self.rate_limits and not self._throttle.admit(route.action, _rate_key(params, query, body),
                                                             self.clock.now()):
                self.throttled_count += 1
                return route, ApiError(429, "rate limit exceeded").reply()
            errors = self._spec.request_errors(method, route.template, query, headers, body)
            if errors:
                return route, self._refuse(method, path, errors, body)
            faults = self._faults.draw(route.action)
        unavailable = _first(faults, Unavailable)
        if unavailable:
            return route, ApiError(unavailable.status, "fakefly: injected failure").reply()

        self.clock.sleep(self._latency("request"))
        if route.action in _ANSWERED_AFTER_LATENCY:
            self.clock.sleep(self._latency(route.action))
        owner = hashlib.sha256(token.encode()).hexdigest()[:12] + "@tokens.fly.io"
        call = Call(params, query, body, headers.get("fly-machine-lease-nonce"), owner, faults)
        with self._lock:
            self._settle()
            try:
                reply = getattr(self, "_" + route.action)(call)
            except ApiError as error:
                reply = error.reply()
            except Refused as refusal:
                reply = self._refuse(method, path, [str(refusal)], body)
            self._lock.notify_all()
        lost = _first(faults, ResponseLost)
        if lost:
            return route, ApiError(lost.status, "fakefly: injected failure after the request was carried out").reply()
        return route, reply

    @staticmethod
    def _match(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in ROUTES + _UNIMPLEMENTED:
            found = route.pattern.fullmatch(path)
            if found and route.method == method:
                return route, found.groupdict()
        return None, {}

    @staticmethod
    def _read_json(environ: dict) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        if len(raw) < length:
            raise ClientGone(f"{len(raw)} of {length} bytes")
        return json.loads(raw) if raw.strip() else None

    def _refuse(self, method: str, path: str, errors: list[str], body: Any) -> Reply:
        with self._lock:
            self.refused.append(Refusal(method, path, tuple(errors), body))
        return Reply(400, {"error": "; ".join(errors)})

    def _latency(self, action: str) -> float:
        seconds = getattr(self.latencies, action)
        if isinstance(seconds, tuple):
            with self._lock:
                seconds = self._rng.uniform(*seconds)
        return seconds * self.time_scale

    # --- lookups (called under the lock) -----------------------------------------------------------------

    def _org(self, slug: str) -> Org:
        if slug not in self.orgs:
            raise ApiError(404, f"organization {slug} not found")
        return self.orgs[slug]

    def _app(self, name: str) -> AppRecord:
        if name in self.foreign_apps:
            raise ApiError(403, f"app {name} belongs to an organization you are not a member of")
        if name in self.deleting_apps:
            return self.deleting_apps[name][0]
        if name not in self.apps:
            raise ApiError(404, f"app {name} not found")
        return self.apps[name]

    def _settle(self) -> None:
        """Completes every transition due by now, so each request sees the whole fleet as of its arrival
        (a destroy's effect on the volume shows on the volume too)."""
        now = self.clock.now()
        for machine in self.machines.values():
            self._settle_machine(machine, now)
        for name, (_, done_at) in list(self.deleting_apps.items()):
            if done_at <= now:
                self._remove_app_resources(name)
                del self.deleting_apps[name]

    def _settle_machine(self, machine: MachineRecord, now: float) -> None:
        """Applies the Machine's transitions due by now, and the proxy's autostop once it has been idle."""
        if machine.transitions and machine.transitions[0].at <= now:
            machine.settle(now, self._ids.ulid)
        idle_at = self._autostop_at(machine)
        if idle_at is not None and idle_at <= now:
            suspend = any(service.get("autostop") == "suspend" for service in machine.config.get("services", []))
            if suspend:
                done_at = idle_at + self._latency("suspend")
                machine.begin(idle_at, "suspending", Transition(done_at, "suspended", "suspend"))
            else:
                machine.begin(idle_at, "stopping",
                              Transition(idle_at + self._stop_seconds(machine, None), "stopped", "stop"))
            machine.settle(now, self._ids.ulid)

    def _autostop_at(self, machine: MachineRecord) -> float | None:
        """When the proxy stops this Machine for idleness, if it would: started, settled, and every service
        lets it (autostop on, `min_machines_running` 0, as each team's single Machine has)."""
        services = machine.config.get("services", [])
        if (self.latencies.autostop_idle is None or machine.state != "started" or machine.transitions
                or not services or not all(service.get("autostop") and not service.get("min_machines_running")
                                           for service in services)):
            return None
        return max(machine.updated_at, machine.last_request_at) + self.latencies.autostop_idle * self.time_scale

    def proxy_request(self, app_name: str) -> None:
        """A request reaches the app through Fly's proxy: a stopped or suspended Machine with `autostart`
        starts (autostart), and a started one is no longer idle."""
        with self._lock:
            now = self.clock.now()
            for machine in self.machines.values():
                if machine.app_name != app_name:
                    continue
                self._settle_machine(machine, now)
                machine.last_request_at = now
                self._autostart(machine, machine.config.get("services", []), now)
            self._lock.notify_all()

    def _autostart(self, machine: MachineRecord, services: list[dict], now: float) -> bool:
        """Starts a stopped or suspended Machine if one of `services` lets the proxy start it."""
        if machine.state in ("stopped", "suspended") and any(service.get("autostart") for service in services):
            machine.begin(now, "starting", Transition(now + self._latency("start"), "started", "start"))
            return True
        return False

    # --- what Fly's proxy (fakefly.proxy) asks the platform ------------------------------------------------

    def app_for_hostname(self, hostname: str) -> str | None:
        """The app Fly's edge hands a request for `hostname` to: the app holding a certificate for it (exact, else
        a wildcard one label up), or `<app>.fly.dev`; either way only if the app has a public IP, as DNS must
        point somewhere (DOCS networking/app-services: apps made by the Machines API have none)."""
        hostname = dns_name(hostname)
        with self._lock:
            exact = self.certificates.get(hostname)
            holders = [exact] if exact else [certificate for certificate in self.certificates.values()
                                             if certificate.covers(hostname)]
            names = [certificate.app_name for certificate in holders]
            if hostname.endswith(".fly.dev"):
                names.append(hostname.removesuffix(".fly.dev"))
            return next((name for name in names
                         if name in self.apps and any(ip.public for ip in self._app_ips(name))), None)

    def forces_https(self, app_name: str, port: int) -> bool:
        """Whether the app's service on public `port` has `force_https` (the edge redirects, DOCS
        reference/configuration)."""
        with self._lock:
            return any(entry.get("port") == port and entry.get("force_https")
                       for machine in self.machines.values()
                       if machine.app_name == app_name and machine.state != "destroyed"
                       for service in machine.config.get("services", []) for entry in service.get("ports", []))

    def app_for_flycast(self, hostname: str, network: str) -> str | None:
        """The app `<app>.flycast` names for a caller inside `network`: only if the app has a Flycast (private
        IPv6) address allocated in that network (DOCS networking/flycast)."""
        app_name = dns_name(hostname).removesuffix(".flycast")
        with self._lock:
            reachable = any(ip.type == "private_v6" and ip.network == network for ip in self._app_ips(app_name))
            return app_name if reachable and app_name in self.apps else None

    def replay_refusal(self, source_app: str, target_app: str) -> tuple[str, str] | None:
        """Why Fly's proxy will not replay from `source_app` into `target_app` (`no_candidate`, `cross_org` or
        `cross_network`, and a message), or None when it may (DOCS
        networking/dynamic-request-routing): within an org on one network; across custom networks once the org
        enabled cross-network replays; across orgs when the target's org lists the source's in replay-sources
        (the network rule applies to same-org replays only)."""
        with self._lock:
            source, target = self.apps.get(source_app), self.apps.get(target_app)
            if source is None or target is None:
                return None  # nothing to refuse: routing finds no candidate, which a fallback may answer
            if source.org is not target.org:
                if source.org.slug in target.org.replay_sources:
                    return None
                return "cross_org", (f"org {target.org.slug} does not accept replays from org {source.org.slug} "
                                     f"(replay-sources)")
            if source.network == target.network or source.org.cross_network_replays:
                return None
            return "cross_network", (f"cross-network replays are disabled in org {source.org.slug}: network "
                                     f"{source.network} cannot replay into network {target.network}")

    def route(self, app_name: str, port: int, *, deadline: float, instance: str | None = None,
              prefer_instance: str | None = None, regions: tuple[str, ...] = (), exclude: str | None = None
              ) -> ProxyRoute:
        """The Machine Fly's proxy sends a request for `app_name` on public `port` to: one whose service
        publishes that port (a target without one is no candidate), in `regions` if given, not `exclude`,
        `instance` only if given; a started one (round robin), else one it may autostart, which it starts and
        waits for until `deadline` (the fake's clock). Raises NoRoute("no_candidate" or "timeout")."""
        with self._lock:
            now = self.clock.now()
            self._settle()
            app = self.apps.get(app_name)
            candidates = [machine for machine in self._visible_machines(lambda machine: machine.app_name == app_name)
                          if app is not None and machine.state not in ("destroying", "destroyed")
                          and _service_on(machine, port) is not None and machine.id != exclude
                          and (instance is None or machine.id == instance)
                          and region_matches(machine.region, regions)]
            if not candidates:
                what = f"Machine {instance} of app {app_name}" if instance else f"Machine of app {app_name}"
                raise NoRoute("no_candidate", f"no {what} serves port {port}"
                                              + (f" in {','.join(regions)}" if regions else ""))
            candidates.sort(key=lambda machine: region_rank(machine.region, regions))
            self._route_turn += 1
            started = [machine for machine in candidates if machine.state == "started"]
            # Round robin among the started Machines of the most preferred region that has any.
            started = [machine for machine in started
                       if region_rank(machine.region, regions) == region_rank(started[0].region, regions)]
            turn = self._route_turn % max(len(started), 1)
            started = started[turn:] + started[:turn]
            preferred = [machine for machine in candidates if machine.id == prefer_instance]
            machine = next(iter([m for m in preferred if m.state == "started"] + started), None)
            if machine is None:
                machine = next((m for m in preferred + candidates
                                if m.state in ("starting", "updating", "restarting")), None)
                # Lazily: the proxy starts one Machine, the first it may.
                machine = machine or next((m for m in preferred + candidates
                                           if self._autostart(m, [_service_on(m, port)], now)), None)
                if machine is None:
                    raise NoRoute("no_candidate", f"no Machine of app {app_name} is started or may be autostarted "
                                                  f"on port {port}")
                self._lock.notify_all()
                while machine.state != "started":
                    now = self.clock.now()
                    if now >= deadline:
                        raise NoRoute("timeout", f"Machine {machine.id} of app {app_name} did not start in time "
                                                 f"(it is {machine.state})")
                    self.clock.block(self._lock, min(deadline, machine.next_transition_at or deadline) - now)
                    self._settle_machine(machine, self.clock.now())
            machine.last_request_at = self.clock.now()
            unavailable = prefer_instance if prefer_instance and machine.id != prefer_instance else None
            return ProxyRoute(machine.id, app_name, machine.region, _service_on(machine, port)["internal_port"],
                              unavailable)

    def _visible_machines(self, predicate) -> list[MachineRecord]:
        now = self.clock.now()
        return [machine for machine in self.machines.values() if predicate(machine) and machine.visible_after <= now]

    def _machine(self, call: Call) -> MachineRecord:
        app = self._app(call.params["app_name"])
        machine_id = call.params["machine_id"]
        machine = self.machines.get(machine_id)
        if machine is None or machine.app_name != app.name or machine.visible_after > self.clock.now():
            raise ApiError(404, f"machine {machine_id} not found")
        return machine

    def _live_lease(self, machine: MachineRecord) -> LeaseRecord | None:
        """The Machine's lease unless it expired; an expired one is gone, and kept in `lapsed_leases`."""
        if machine.lease is not None and machine.lease.expires_at <= self.clock.now():
            self.lapsed_leases.append((machine.id, machine.lease))
            machine.lease = None
        return machine.lease

    def _mutable_machine(self, call: Call) -> MachineRecord:
        """A Machine a mutation may touch: not destroyed, and the caller holds its lease if it has one."""
        machine = self._machine(call)
        if machine.state in ("destroying", "destroyed"):
            raise ApiError(404, f"machine {machine.id} not found")
        lease = self._live_lease(machine)
        if lease is not None and call.nonce != lease.nonce:
            raise ApiError(409, f"aborted: machine ID {machine.id} lease currently held by {lease.owner}, "
                                f"expires at {iso(lease.expires_at)}")
        return machine

    def _volume(self, call: Call) -> VolumeRecord:
        app = self._app(call.params["app_name"])
        volume = self.volumes.get(call.params["volume_id"])
        if volume is None or volume.app_name != app.name:
            raise ApiError(404, f"volume {call.params['volume_id']} not found")
        return volume

    def _secrets_version_for(self, app: AppRecord, body: dict) -> int:
        """The secrets version a Machine created or updated with `body` boots with: the latest when the request
        asks for at least that (the host waits for it), else whatever has reached the host."""
        wanted = body.get("min_secrets_version")
        if wanted is not None and wanted > app.secrets_version:
            raise ApiError(400, f"secrets version {wanted} does not exist (latest is {app.secrets_version})")
        seen = app.secrets_version_seen(self.clock.now(), self._latency("secrets_propagation"))
        return app.secrets_version if wanted is not None and wanted > seen else seen

    # --- apps ----------------------------------------------------------------------------------------------

    def _app_json(self, app: AppRecord) -> dict:
        machines = self._visible_machines(lambda machine: machine.app_name == app.name)
        live = [machine for machine in machines if machine.state != "destroyed"]
        return app.to_json(
            machine_count=len(live),
            volume_count=sum(volume.app_name == app.name and volume.state == "created"
                             for volume in self.volumes.values()),
            running=any(machine.state in RUNNING_STATES for machine in live))

    def _list_apps(self, call: Call) -> Reply:
        org = self._org(call.first("org_slug"))
        apps = [self._app_json(app) for app in [*self.apps.values(), *(app for app, _ in self.deleting_apps.values())]
                if app.org is org]
        return Reply(200, {"total_apps": len(apps), "apps": apps})

    def _create_app(self, call: Call) -> Reply:
        name = call.body["name"]
        if name in self.apps or name in self.deleting_apps or name in self.foreign_apps:
            raise ApiError(422, "Validation failed: Name has already been taken", "name_taken")
        org = self._org(call.body["org_slug"])
        network = call.body.get("network", "default")
        if not NETWORK_NAME.fullmatch(network):
            raise Refused(f"network {network!r}: letters, digits and dashes, starting with a letter")
        now = self.clock.now()
        app = AppRecord(self._ids.app(), name, org, network, internal_numeric_id=next(self._serials),
                        created_at=now)
        self.apps[name] = app
        return Reply(201, {"id": app.id, "created_at": millis(now)}, schema="fakefly.AppCreated")

    def _get_app(self, call: Call) -> Reply:
        return Reply(200, self._app_json(self._app(call.params["app_name"])))

    def _delete_app(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        machines = [machine for machine in self.machines.values() if machine.app_name == app.name]
        if not call.flag("force") and any(machine.state in RUNNING_STATES for machine in machines):
            raise ApiError(412, "failed_precondition: the app has running machines; stop them or use force=true")
        # Accepted, finished later (DOCS machines/api/apps-resource: 202): its Machines go down meanwhile.
        now = self.clock.now()
        done_at = now + self._latency("delete_app")
        for machine in machines:
            if machine.state != "destroyed":
                machine.begin(now, "destroying", Transition(done_at, "destroyed", "destroy"))
        self.apps.pop(app.name, None)
        self.deleting_apps[app.name] = (app, done_at)
        return Reply(202)

    def _remove_app_resources(self, name: str) -> None:
        for machine in [machine for machine in self.machines.values() if machine.app_name == name]:
            del self.machines[machine.id]
        for volume in [volume for volume in self.volumes.values() if volume.app_name == name]:
            del self.volumes[volume.id]
        for hostname in [hostname for hostname, record in self.certificates.items() if record.app_name == name]:
            del self.certificates[hostname]
        self.ip_assignments = [ip for ip in self.ip_assignments if ip.app_name != name]

    # --- volumes -------------------------------------------------------------------------------------------

    def _list_volumes(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        return Reply(200, [volume.to_json() for volume in self.volumes.values()
                           if volume.app_name == app.name and volume.state != "pending_destroy"])

    def _create_volume(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        body = call.body
        _check_region(body["region"])
        if "compute" in body:
            _check_guest(body["compute"], "compute")
        volume = VolumeRecord(
            id=self._ids.volume(), app_name=app.name, name=body["name"], region=body["region"],
            zone=f"{self._rng.getrandbits(16):04x}", size_gb=body.get("size_gb", 3),
            encrypted=body.get("encrypted", True), snapshot_retention=body.get("snapshot_retention", 5),
            auto_backup_enabled=body.get("auto_backup_enabled", True), created_at=self.clock.now())
        self.volumes[volume.id] = volume
        return Reply(200, volume.to_json())

    def _get_volume(self, call: Call) -> Reply:
        return Reply(200, self._volume(call).to_json())

    def _delete_volume(self, call: Call) -> Reply:
        volume = self._volume(call)
        if volume.attached_machine_id is not None:
            raise ApiError(412, f"failed_precondition: volume {volume.id} is attached to machine "
                                f"{volume.attached_machine_id}")
        volume.state = "pending_destroy"  # soft-deleted: Fly keeps it recoverable for a day
        return Reply(200, volume.to_json())

    # --- secrets -------------------------------------------------------------------------------------------

    def _set_secrets(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        now = self.clock.now()
        for name, value in call.body.get("values", {}).items():
            if value is None:
                app.secrets.pop(name, None)
            elif name in app.secrets:
                app.secrets[name] = Secret(value, app.secrets[name].created_at, now)
            else:
                app.secrets[name] = Secret(value, now, now)
        app.secrets_version += 1
        app.secrets_set_at[app.secrets_version] = now
        return Reply(200, {"secrets": [secret.to_json(name) for name, secret in sorted(app.secrets.items())],
                           "version": app.secrets_version})

    # --- machines ------------------------------------------------------------------------------------------

    def _create_machine(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        body = call.body
        config = _normalized_config(body["config"])
        now = self.clock.now()
        name = body.get("name") or f"machine-{self._rng.getrandbits(24):06x}"
        # Writes are consistent even while reads are not: a Machine hidden by NotVisible still holds its name.
        if any(machine.app_name == app.name and machine.name == name and machine.state != "destroyed"
               for machine in self.machines.values()):
            raise ApiError(422, f"a machine named {name} already exists in {app.name}")
        region = body.get("region")
        if region is not None:
            _check_region(region)
        volume = self._mountable_volume(app, config, region)
        if volume is not None:
            region = region or volume.region
            if _first(call.faults, HostFull):
                raise ApiError(412, "insufficient resources to create new machine with existing volume",
                               "volume_placement_capacity")
        secrets_version = self._secrets_version_for(app, body)
        not_visible = _first(call.faults, NotVisible)
        machine = MachineRecord(
            id=self._ids.machine(), app_name=app.name, name=name, region=region or "ord", config=config,
            instance_id=self._ids.ulid(now),
            private_ip=f"fdaa:0:{app.internal_numeric_id:x}:a7b:{next(self._serials):x}::2",
            created_at=now, updated_at=now, visible_after=now + (not_visible.seconds if not_visible else 0.0),
            secrets_version=secrets_version)
        machine.record_event(self._ids.ulid(now), "launch", "created", now)
        if volume is not None:
            volume.attached_machine_id = machine.id
        if not body.get("skip_launch"):
            machine.transitions = [Transition(now, "starting", "start"),
                                   Transition(now + self._latency("start"), "started", "start")]
        answer = {}
        if body.get("lease_ttl"):
            machine.lease = LeaseRecord(self._ids.nonce(), call.owner, "", now + body["lease_ttl"],
                                        machine.instance_id)
            answer["nonce"] = machine.lease.nonce
        machine.remember(now)
        self.machines[machine.id] = machine
        return Reply(200, machine.to_json() | answer)

    def _mountable_volume(self, app: AppRecord, config: dict, region: str | None) -> VolumeRecord | None:
        mounts = config.get("mounts", [])
        if not mounts:
            return None
        if len(mounts) > 1:
            raise Refused("config.mounts: a Machine mounts at most one volume")
        volume = self.volumes.get(mounts[0].get("volume", ""))
        if volume is None or volume.app_name != app.name or volume.state != "created":
            raise ApiError(400, f"volume {mounts[0].get('volume')} not found in app {app.name}")
        if volume.attached_machine_id is not None:
            raise ApiError(412, f"failed_precondition: volume {volume.id} is already attached to machine "
                                f"{volume.attached_machine_id}")
        if region is not None and region != volume.region:
            raise ApiError(400, f"region {region} does not match volume {volume.id}'s region {volume.region}")
        return volume

    def _list_machines(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        include_deleted = call.flag("include_deleted")
        states = set(call.first("state").split(",")) if call.first("state") else None
        wanted_metadata = {name.removeprefix("metadata."): values[0]
                           for name, values in call.query.items() if name.startswith("metadata.")}

        def selected(machine: MachineRecord) -> bool:
            metadata = machine.config.get("metadata", {})
            return (machine.app_name == app.name
                    and (include_deleted or machine.state != "destroyed")
                    and (states is None or machine.state in states)
                    and call.first("region", machine.region) == machine.region
                    and all(metadata.get(key) == value for key, value in wanted_metadata.items()))

        summary = call.flag("summary")
        return Reply(200, [machine.to_json(summary=summary) for machine in self._visible_machines(selected)])

    def _get_machine(self, call: Call) -> Reply:
        machine = self._machine(call)
        return Reply(200, machine.to_json() | {"checks": self._check_statuses(machine)})

    def _check_statuses(self, machine: MachineRecord) -> list[dict]:
        """The checks' results: the top-level ones (`config.checks`, named by their key) and the services' ones.
        None on a Machine that is not started, nor on a freshly started one (flyctl PR #4952): each check appears
        once it first ran, `grace_period` (scaled) plus the `health` latency after the start, `passing`, or
        `critical` for an unhealthy image."""
        if machine.state != "started":
            return []
        named = list((machine.config.get("checks") or {}).items())
        for service in machine.config.get("services", []):
            named += [(f"servicecheck-{number:02d}-{check.get('type', 'tcp')}-{service.get('internal_port')}", check)
                      for number, check in enumerate(service.get("checks", []))]
        now = self.clock.now()
        results = []
        for name, check in named:
            first_result_at = (machine.updated_at + self._latency("health")
                               + duration_seconds(check.get("grace_period", "0s")) * self.time_scale)
            if now < first_result_at:
                continue
            healthy = machine.config["image"] not in self.unhealthy_images
            results.append({
                "name": name, "status": "passing" if healthy else "critical",
                "output": "200 OK" if healthy else f"GET {check.get('path', '/')}: connection refused",
                "updated_at": iso(first_result_at)})
        return results

    def _update_machine(self, call: Call) -> Reply:
        machine = self._mutable_machine(call)
        app = self._app(machine.app_name)
        body = call.body
        for immutable in ("name", "region"):
            if body.get(immutable, getattr(machine, immutable)) != getattr(machine, immutable):
                raise ApiError(400, f"a machine's {immutable} cannot be changed")
        if body.get("current_version", machine.instance_id) != machine.instance_id:
            raise ApiError(412, f"failed_precondition: machine version {body['current_version']} is not the "
                                f"current version {machine.instance_id}")
        config = _normalized_config(body["config"])
        if [mount.get("volume") for mount in config.get("mounts", [])] != machine.mounted_volume_ids:
            raise ApiError(400, "mounts cannot be changed by an update; destroy and recreate the machine")
        secrets_version = self._secrets_version_for(app, body)

        now = self.clock.now()
        previous = machine.config, machine.instance_id, machine.secrets_version
        machine.config, machine.instance_id, machine.secrets_version = config, self._ids.ulid(now), secrets_version

        def revert() -> None:
            machine.config, machine.instance_id, machine.secrets_version = previous

        skip_launch = body.get("skip_launch", False)
        was_running = machine.state in RUNNING_STATES
        if was_running or not skip_launch:
            # The old version stops and the new one boots, unless skip_launch leaves it stopped.
            transient, final = "updating", "stopped" if skip_launch else "started"
        else:
            # Stays down (one on its way down finishes going down); a suspended snapshot belongs to the old
            # version, so it is dropped.
            transient = "stopped" if machine.state == "suspended" else machine.state
            final = "stopped" if machine.state in ("suspended", "suspending", "stopping") else machine.state
        machine.begin(now, transient, Transition(now + self._latency("update"), final, "update",
                                                 revert if _first(call.faults, SilentRevert) else None))
        return Reply(200, machine.to_json())

    def _start_machine(self, call: Call) -> Reply:
        machine = self._mutable_machine(call)
        previous_state = machine.state
        if previous_state not in RUNNING_STATES:
            now = self.clock.now()
            machine.begin(now, "starting", Transition(now + self._latency("start"), "started", "start"))
        return Reply(200, {"previous_state": previous_state, "migrated": False, "new_host": ""},
                     schema="fakefly.StartResponse")

    def _stop_machine(self, call: Call) -> Reply:
        machine = self._mutable_machine(call)
        if machine.state in RUNNING_STATES | {"suspended"}:
            now = self.clock.now()
            machine.begin(now, "stopping", Transition(now + self._stop_seconds(machine, call.body), "stopped", "stop"))
        return Reply(200, {"ok": True}, schema="fakefly.Ok")

    def _stop_seconds(self, machine: MachineRecord, body: dict | None) -> float:
        """How long a stop takes: the process's own shutdown (`stop` latency), cut short by a kill when it
        outlasts the stop's timeout: the request's, else the config's `stop_config.timeout`, else Fly's default
        of 5 s (DOCS machines/api/machines-resource, stop; reference/configuration, kill_timeout)."""
        timeout = (body or {}).get("timeout") or machine.config.get("stop_config", {}).get("timeout") or "5s"
        return min(self._latency("stop"), duration_seconds(timeout) * self.time_scale)

    def _suspend_machine(self, call: Call) -> Reply:
        machine = self._mutable_machine(call)
        if machine.state != "started":
            raise ApiError(412, f"failed_precondition: cannot suspend a machine that is {machine.state}")
        now = self.clock.now()
        machine.begin(now, "suspending", Transition(now + self._latency("suspend"), "suspended", "suspend"))
        return Reply(200, {"ok": True}, schema="fakefly.Ok")

    def _destroy_machine(self, call: Call) -> Reply:
        machine = self._mutable_machine(call)
        if machine.state in RUNNING_STATES and not call.flag("force"):
            raise ApiError(412, "failed_precondition: unable to destroy machine, not currently stopped")

        def release_resources() -> None:
            machine.lease = None
            for volume_id in machine.mounted_volume_ids:
                if volume_id in self.volumes:
                    self.volumes[volume_id].attached_machine_id = None

        now = self.clock.now()
        machine.begin(now, "destroying",
                      Transition(now + self._latency("destroy"), "destroyed", "destroy", release_resources))
        return Reply(200, {"ok": True}, schema="fakefly.Ok")

    def _wait_machine(self, call: Call) -> Reply:
        machine = self._machine(call)
        states = {state for value in call.query.get("state", ["started"]) for state in value.split(",")}
        if "stopped" in states and not (call.first("version") or call.first("instance_id")):
            raise Refused("query version: required to wait for stopped (DOCS machines/api/machines-resource)")
        version = call.first("version") or call.first("instance_id")
        timeout = min(int(call.first("timeout", str(WAIT_CAP_SECONDS))), WAIT_CAP_SECONDS)
        deadline = self.clock.now() + timeout
        while True:
            now = self.clock.now()
            self._settle_machine(machine, now)
            reached = machine.state in states or ("settled" in states and machine.state in SETTLED_STATES)
            # `version` asks about that version of the Machine (DOCS machines/api/machines-resource, wait): the
            # state of an earlier one does not count. A version the Machine has left for good (a silent revert
            # put it back on the previous one) is answered at once with the version it is on, so the caller sees.
            superseded = version is not None and version != machine.instance_id and not machine.transitions
            if (reached and version in (None, machine.instance_id)) or superseded:
                return Reply(200, {"ok": True, "state": machine.state, "version": machine.instance_id,
                                   "event_id": machine.events[-1]["id"]})
            if now >= deadline:
                raise ApiError(408, f"deadline_exceeded: machine {machine.id} did not reach "
                                    f"{','.join(sorted(states))} within {timeout}s")
            wake_at = min(deadline, machine.next_transition_at or self._autostop_at(machine) or deadline)
            self.clock.block(self._lock, wake_at - now)

    # --- leases and metadata -------------------------------------------------------------------------------

    def _lease_reply(self, lease: LeaseRecord, status: int) -> Reply:
        if self.lease_envelope:
            return Reply(status, {"status": "success", "data": lease.to_json()}, schema="fakefly.LeaseEnvelope")
        return Reply(status, lease.to_json())

    def _acquire_lease(self, call: Call) -> Reply:
        machine = self._machine(call)
        now = self.clock.now()
        ttl = call.body.get("ttl", 30)
        if ttl <= 0:
            raise Refused("ttl: must be positive")
        lease = self._live_lease(machine)
        if lease is not None and call.nonce != lease.nonce:
            raise ApiError(409, f"aborted: machine ID {machine.id} lease currently held by {lease.owner}, "
                                f"expires at {iso(lease.expires_at)}")
        if lease is None and call.nonce:
            raise ApiError(404, f"lease not found for machine {machine.id}: it expired or was released")
        if lease is None:
            lease = machine.lease = LeaseRecord(self._ids.nonce(), call.owner, call.body.get("description", ""),
                                                now + ttl, machine.instance_id)
        else:
            lease.expires_at = now + ttl
        return self._lease_reply(lease, 201)

    def _get_lease(self, call: Call) -> Reply:
        machine = self._machine(call)
        lease = self._live_lease(machine)
        if lease is None:
            raise ApiError(404, f"no lease for machine {machine.id}")
        return self._lease_reply(lease, 200)

    def _release_lease(self, call: Call) -> Reply:
        machine = self._machine(call)
        lease = self._live_lease(machine)
        if lease is None:  # expired or never taken (flyctl PR #2452, "lease not found")
            raise ApiError(404, f"lease not found for machine {machine.id}")
        if call.nonce != lease.nonce:
            raise ApiError(409, f"aborted: machine ID {machine.id} lease is held by {lease.owner} with another nonce")
        machine.lease = None
        return Reply(200)

    def _set_metadata(self, call: Call) -> Reply:
        machine = self._mutable_machine(call)
        machine.config.setdefault("metadata", {})[call.params["key"]] = call.body["value"]
        machine.updated_at = self.clock.now()
        machine.remember(machine.updated_at)
        return Reply(204)

    def _delete_metadata(self, call: Call) -> Reply:
        machine = self._mutable_machine(call)
        machine.config.get("metadata", {}).pop(call.params["key"], None)
        machine.updated_at = self.clock.now()
        machine.remember(machine.updated_at)
        return Reply(204)

    # --- org-wide ------------------------------------------------------------------------------------------

    def _list_org_machines(self, call: Call) -> Reply:
        """The org's Machines as they were `org_listing_lag` ago: the listing is "a point in time" (DOCS
        machines/api/machines-resource, list org Machines), built from a snapshot, not the live state."""
        org = self._org(call.params["org_slug"])
        include_deleted = call.flag("include_deleted")
        seen_at = self.clock.now() - self._latency("org_listing_lag")
        views = []
        for machine in self._visible_machines(lambda machine: self._app(machine.app_name).org is org):
            view = machine.org_view(seen_at)
            if view is not None and (include_deleted or view[1]["state"] != "destroyed"):
                views.append((view[0], machine.id, view[1]))
        views.sort(key=lambda view: view[:2])
        if call.first("cursor"):
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(call.first("cursor"))))
            except ValueError as error:
                raise Refused(f"query cursor: not a cursor this API returned ({error})") from None
            views = [view for view in views if view[:2] > after]
        page_size = min(int(call.first("limit", str(MAX_ORG_PAGE))), MAX_ORG_PAGE, self.org_page_cap or MAX_ORG_PAGE)
        page = views[:max(page_size, 0)]
        body: dict[str, Any] = {"machines": [entry for _, _, entry in page]}
        if page:
            updated_at, machine_id, _ = page[-1]
            body |= {"last_machine_id": machine_id, "last_updated_at": iso(updated_at)}
            if len(views) > len(page):
                body["next_cursor"] = base64.urlsafe_b64encode(json.dumps([updated_at, machine_id]).encode()).decode()
        return Reply(200, body)

    # --- certificates and IP assignments -------------------------------------------------------------------

    def _app_ips(self, app_name: str) -> list[IPAssignmentRecord]:
        return [ip for ip in self.ip_assignments if ip.app_name == app_name]

    def _validated(self, certificate: CertificateRecord) -> CertificateRecord:
        certificate.validate(self.dns, self._app_ips(certificate.app_name), self.clock.now(),
                             self._latency("certificate_issue"))
        return certificate

    def _certificate(self, call: Call) -> CertificateRecord:
        app = self._app(call.params["app_name"])
        certificate = self.certificates.get(dns_name(call.params["hostname"]))
        if certificate is None or certificate.app_name != app.name:
            raise ApiError(404, f"certificate for {call.params['hostname']} not found in app {app.name}")
        return self._validated(certificate)

    def _list_certificates(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        wanted = call.first("filter") or ""
        matching = sorted((self._validated(certificate) for certificate in self.certificates.values()
                           if certificate.app_name == app.name and wanted in certificate.hostname),
                          key=lambda certificate: certificate.hostname)
        after = call.first("cursor")
        page = [certificate for certificate in matching if after is None or certificate.hostname > after]
        limit = min(int(call.first("limit", "25")), 500)
        body: dict[str, Any] = {"certificates": [certificate.summary_json() for certificate in page[:max(limit, 0)]],
                                "total_count": len(matching)}
        if len(page) > limit > 0:
            body["next_cursor"] = page[limit - 1].hostname
        return Reply(200, body)

    def _create_acme_certificate(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        hostname = dns_name(call.body.get("hostname") or "")
        if not HOSTNAME.fullmatch(hostname):
            raise ApiError(422, f"{hostname!r} is not a hostname (a wildcard only as its first label, *.example.com)")
        existing = self.certificates.get(hostname)
        if existing is not None:
            where = "this app" if existing.app_name == app.name else "another app"
            raise ApiError(422, f"Hostname {hostname} already exists on {where}")
        now = self.clock.now()
        certificate = CertificateRecord(
            hostname=hostname, app_name=app.name, created_at=now, updated_at=now,
            challenge_target=f"{hostname.removeprefix('*.')}.{self._ids.app()[:6]}.flydns.net",
            app_value=f"app-{app.id[:10]}", org_value=f"org-{app.org.internal_numeric_id:010d}")
        self.certificates[hostname] = certificate
        return Reply(201, self._validated(certificate).detail_json(self._app_ips(app.name)))

    def _get_certificate(self, call: Call) -> Reply:
        certificate = self._certificate(call)
        return Reply(200, certificate.detail_json(self._app_ips(certificate.app_name)))

    def _check_certificate(self, call: Call) -> Reply:
        certificate = self._certificate(call)
        return Reply(200, certificate.check_json(self._app_ips(certificate.app_name), self.dns))

    def _delete_certificate(self, call: Call) -> Reply:
        del self.certificates[self._certificate(call).hostname]
        return Reply(204)

    def _list_ip_assignments(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        return Reply(200, {"ips": [ip.to_json() for ip in self._app_ips(app.name)]})

    def _assign_ip(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        kind = call.body.get("type")
        if kind not in IP_TYPES:
            raise Refused(f"type: {kind!r} is not one of {sorted(IP_TYPES)}")
        region = call.body.get("region") or "global"
        if region != "global":
            _check_region(region)
        if kind == "shared_v4" and any(ip.type == "shared_v4" for ip in self._app_ips(app.name)):
            raise ApiError(422, f"app {app.name} already has a shared IPv4 address")
        serial = next(self._serials)
        address = {"v4": f"137.66.{serial >> 8 & 255}.{serial & 255}", "shared_v4": SHARED_V4,
                   "v6": f"2a09:8280:1::{serial:x}",
                   "private_v6": f"fdaa:0:{app.internal_numeric_id:x}:0:{serial:x}::"}[kind]
        # A Flycast address lives in the app's network unless allocated into another (DOCS networking/flycast).
        network = (call.body.get("network") or app.network) if kind == "private_v6" else None
        record = IPAssignmentRecord(address, app.name, kind, region, self.clock.now(), call.body.get("service_name"),
                                    network)
        self.ip_assignments.append(record)
        return Reply(200, record.to_json())

    def _release_ip(self, call: Call) -> Reply:
        app = self._app(call.params["app_name"])
        held = [ip for ip in self._app_ips(app.name) if ip.ip == call.params["ip"]]
        if not held:
            raise ApiError(404, f"ip {call.params['ip']} is not assigned to app {app.name}")
        self.ip_assignments.remove(held[0])
        return Reply(204)
