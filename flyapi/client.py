"""A thin typed client for the Fly Machines REST API (https://fly.io/docs/machines/api/), over httpx.

What it adds to plain HTTP, each for a documented reason (reference `fly-machines-api.md`):

- Rate limiting before sending, with token buckets per (action, app or Machine id) at Fly's published limits
  (section 11), so a fleet operation slows down instead of collecting 429s.
- Retries with exponential backoff and full jitter on 429, 408, 5xx and connection errors. Creates are the
  exception: Fly has no Idempotency-Key, so once a create may have reached Fly (408, 5xx, a connection lost
  after sending) it is not repeated; `FlyAPIError(ambiguous=True)` tells the caller to look the resource up
  (launch id in metadata, deterministic names; section 13). A 429, or a connection never made, is retried.
- The checks the OpenAPI document leaves out (section 17): `config.image`, memory in multiples of 256 MB, ...
  They raise ValueError before anything is sent.
- One log line per call with method, path, status and `fly-request-id`; never the token or a body.

One FlyClient is safe to share between threads (httpx.Client and the rate limiter are).
"""

from __future__ import annotations

import enum
import logging
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from .checks import check_guest, check_machine_config, check_name, is_int
from .errors import FlyAPIError
from .models import App, Certificate, CertificateSummary, IPAssignment, Lease, Machine, Volume, WaitResult
from .ratelimit import RateLimiter

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.machines.dev/v1"
NONCE_HEADER = "fly-machine-lease-nonce"
WAIT_WINDOW_SECONDS = 60  # Fly's wait blocks at most this long per request, then answers 408
WAIT_STATES = frozenset({"started", "stopped", "suspended", "destroyed", "failed", "settled"})
# Right after a create, wait can answer 404 until the Machine has propagated (flyctl PR #4618).
NOT_FOUND_GRACE_SECONDS = 10.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 20.0
MAX_ORG_PAGE = 1000
MAX_VOLUME_GB = 500
MAX_CERTIFICATE_PAGE = 500
IP_TYPES = frozenset({"v4", "shared_v4", "v6", "private_v6"})  # flyctl's names; the docs list none
NETWORK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")  # DOCS networking/custom-private-networks

# Failures that prove the request never reached Fly: even a create may be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures worth another attempt (the rest, like an invalid URL, would fail the same way again).
_TRANSIENT_TRANSPORT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


class _Retry(enum.Enum):
    """Which failures a call may repeat."""

    TRANSIENT = "transient"  # reads and repeatable mutations: 408, 429, 5xx, connection errors
    UNPROCESSED = "unprocessed"  # creates: only what proves nothing happened (429, never connected)
    NOT_TIMEOUTS = "not timeouts"  # wait: its 408 means "not yet" and goes back to the wait loop


class FlyClient:
    def __init__(self, base_url: str = DEFAULT_BASE_URL, token: str = "", *,
                 transport: httpx.BaseTransport | None = None, timeout: float = 30, max_attempts: int = 6,
                 limiter: RateLimiter | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        """`token`: an org-scoped token, sent as `Bearer <token>` (or as is when it starts with `FlyV1 `).
        `limiter`: None applies Fly's limits on this client's clock; `RateLimiter.unlimited()` disables them.
        `sleep`, `clock`, `rng`: injectable so tests run on virtual time and deterministic jitter."""
        if not token:
            raise ValueError("a Fly API token is required")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        authorization = token if token.startswith("FlyV1 ") else f"Bearer {token}"
        self._http = httpx.Client(base_url=base_url, transport=transport, timeout=timeout,
                                  headers={"Authorization": authorization, "User-Agent": "cloudctl"})
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._limiter = limiter if limiter is not None else RateLimiter(clock=clock, sleep=sleep)
        # Public so code built on this client waits on the same (possibly virtual) time.
        self.sleep = sleep
        self.clock = clock
        self._rng = rng or random.Random()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FlyClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- apps ---

    def create_app(self, name: str, org_slug: str, network: str) -> App:
        """The app on its own private network. 422 `name_taken` means the name is used: `get_app` tells
        whether by us (200) or by someone else (403). Ambiguous failures: `get_app` as well."""
        check_name(name, "name")
        check_name(org_slug, "org_slug")
        if not NETWORK_NAME.fullmatch(network or ""):
            raise ValueError(f"network {network!r}: letters, digits and dashes, starting with a letter")
        body = self._json(self._call("POST", "/apps", action="create_app", key=name, retry=_Retry.UNPROCESSED,
                                     json={"name": name, "org_slug": org_slug, "network": network}))
        return App(name=name, id=(body or {}).get("id"), org_slug=org_slug, network=network, status=None,
                   raw=body or {})

    def get_app(self, name: str) -> App:
        return App.from_json(self._json(self._call("GET", _path("apps", name), action="get_app", key=name)))

    def list_apps(self, org_slug: str) -> list[App]:
        body = self._json(self._call("GET", "/apps", action="list_apps", key=org_slug,
                                     params={"org_slug": org_slug}))
        return [App.from_json(app) for app in body.get("apps") or []]

    def delete_app(self, name: str, force: bool = False) -> None:
        """Machines must be stopped first unless `force`."""
        self._call("DELETE", _path("apps", name), action="delete_app", key=name, params=_flag("force", force))

    # --- volumes ---

    def create_volume(self, app: str, name: str, region: str, size_gb: int, compute: Mapping[str, Any]) -> Volume:
        """`compute` is the guest of the Machine that will mount it: Fly picks a host with room for both.
        Volume names are not unique: after an ambiguous failure, `list_volumes` and adopt the one named `name`."""
        check_name(name, "name")
        check_name(region, "region")
        if not (is_int(size_gb) and 1 <= size_gb <= MAX_VOLUME_GB):
            raise ValueError(f"size_gb must be an integer from 1 to {MAX_VOLUME_GB}, got {size_gb!r}")
        check_guest(compute, "compute")
        body = {"name": name, "region": region, "size_gb": size_gb, "compute": dict(compute)}
        return Volume.from_json(self._json(self._call("POST", _path("apps", app, "volumes"), action="create_volume",
                                                      key=app, retry=_Retry.UNPROCESSED, json=body)))

    def list_volumes(self, app: str) -> list[Volume]:
        body = self._json(self._call("GET", _path("apps", app, "volumes"), action="list_volumes", key=app))
        return [Volume.from_json(volume) for volume in body]

    def get_volume(self, app: str, volume_id: str) -> Volume:
        return Volume.from_json(self._json(self._call("GET", _path("apps", app, "volumes", volume_id),
                                                      action="get_volume", key=volume_id)))

    def delete_volume(self, app: str, volume_id: str) -> Volume:
        """Soft delete (Fly keeps it recoverable for a day); the volume must not be attached."""
        return Volume.from_json(self._json(self._call("DELETE", _path("apps", app, "volumes", volume_id),
                                                      action="delete_volume", key=volume_id)))

    # --- secrets ---

    def set_secrets(self, app: str, values: Mapping[str, str | None]) -> int:
        """Sets (None: deletes) app secrets; returns the secrets version to pass as `min_secrets_version`."""
        if not values:
            raise ValueError("values is empty")
        body = self._json(self._call("POST", _path("apps", app, "secrets"), action="set_secrets", key=app,
                                     json={"values": dict(values)}))
        return body["version"]

    # --- machines ---

    def create_machine(self, app: str, *, name: str, region: str, config: Mapping[str, Any],
                       min_secrets_version: int | None = None, skip_launch: bool = False) -> Machine:
        """Put a launch id in `config["metadata"]` before calling: after an ambiguous failure,
        `list_machines(app, metadata={...})` finds the Machine if it was created."""
        check_name(name, "name")
        check_name(region, "region")
        check_machine_config(config)
        body = {"name": name, "region": region, "config": dict(config)}
        if min_secrets_version is not None:
            body["min_secrets_version"] = min_secrets_version
        if skip_launch:
            body["skip_launch"] = True
        return Machine.from_json(self._json(self._call("POST", _path("apps", app, "machines"),
                                                       action="create_machine", key=app,
                                                       retry=_Retry.UNPROCESSED, json=body)), app)

    def get_machine(self, app: str, machine_id: str) -> Machine:
        return Machine.from_json(self._json(self._call("GET", _machine_path(app, machine_id),
                                                       action="get_machine", key=machine_id)), app)

    def list_machines(self, app: str, metadata: Mapping[str, str] | None = None,
                      include_deleted: bool = False) -> list[Machine]:
        """Only Machines whose metadata has every given key=value."""
        params = {f"metadata.{key}": value for key, value in (metadata or {}).items()}
        params |= _flag("include_deleted", include_deleted)
        body = self._json(self._call("GET", _path("apps", app, "machines"), action="list_machines", key=app,
                                     params=params))
        return [Machine.from_json(machine, app) for machine in body]

    def update_machine(self, app: str, machine_id: str, *, config: Mapping[str, Any], current_version: str,
                       skip_launch: bool = False, min_secrets_version: int | None = None,
                       nonce: str | None = None) -> Machine:
        """Replaces the whole config (no partial updates: read, change, send, under a lease). A running
        Machine restarts; `skip_launch` keeps a stopped one stopped. A stale `current_version` fails (412 or
        409): read the Machine again. Verify the version after waiting: Fly can silently revert a failed update."""
        check_machine_config(config)
        check_name(current_version, "current_version")
        body: dict[str, Any] = {"config": dict(config), "current_version": current_version}
        if skip_launch:
            body["skip_launch"] = True
        if min_secrets_version is not None:
            body["min_secrets_version"] = min_secrets_version
        return Machine.from_json(self._json(self._call("POST", _machine_path(app, machine_id),
                                                       action="update_machine", key=machine_id,
                                                       json=body, nonce=nonce)), app)

    def start(self, app: str, machine_id: str, nonce: str | None = None) -> None:
        self._call("POST", _machine_path(app, machine_id, "start"), action="start_machine", key=machine_id,
                   nonce=nonce)

    def stop(self, app: str, machine_id: str, nonce: str | None = None) -> None:
        """Stops with the Machine's own `stop_config` signal and timeout."""
        self._call("POST", _machine_path(app, machine_id, "stop"), action="stop_machine", key=machine_id,
                   nonce=nonce)

    def suspend(self, app: str, machine_id: str, nonce: str | None = None) -> None:
        self._call("POST", _machine_path(app, machine_id, "suspend"), action="suspend_machine", key=machine_id,
                   nonce=nonce)

    def destroy_machine(self, app: str, machine_id: str, force: bool = False, nonce: str | None = None) -> None:
        """A running Machine needs `force`; its volume is detached once the Machine reaches `destroyed`."""
        self._call("DELETE", _machine_path(app, machine_id), action="destroy_machine", key=machine_id,
                   params=_flag("force", force), nonce=nonce)

    def wait(self, app: str, machine_id: str, state: str = "started", *, version: str | None = None,
             timeout: float = 60) -> WaitResult:
        """Blocks until the Machine is in `state`, for up to `timeout` seconds in Fly's 60 s windows (each
        408 means "not yet"); then raises FlyAPIError with http_status 408. A 404 in the first seconds is
        taken as the new Machine not having propagated yet. Fly needs `version` to wait for `stopped`."""
        if state not in WAIT_STATES:
            raise ValueError(f"state must be one of {sorted(WAIT_STATES)}, got {state!r}")
        if state == "stopped" and not version:
            raise ValueError("waiting for stopped needs the Machine's version (instance_id)")
        started_at = self.clock()
        deadline = started_at + timeout
        not_found_attempts = 0
        last_error: FlyAPIError | None = None
        while (window := min(WAIT_WINDOW_SECONDS, math.ceil(deadline - self.clock()))) >= 1:
            params = {"state": state, "timeout": window} | ({"version": version} if version else {})
            try:
                body = self._json(self._call("GET", _machine_path(app, machine_id, "wait"), action="wait_machine",
                                             key=machine_id, params=params, retry=_Retry.NOT_TIMEOUTS,
                                             timeout=window + self._timeout))
            except FlyAPIError as error:
                if error.http_status == 408:
                    last_error = error
                elif error.http_status == 404 and self.clock() - started_at < NOT_FOUND_GRACE_SECONDS:
                    not_found_attempts += 1
                    last_error = error
                    self.sleep(self._backoff(not_found_attempts))
                else:
                    raise
                continue
            return WaitResult(state=body["state"], version=body.get("version"), event_id=body.get("event_id"))
        if last_error is not None and last_error.http_status == 408:
            raise last_error
        raise FlyAPIError(408, None, f"machine {machine_id} did not reach {state} within {timeout}s",
                          last_error.request_id if last_error else None)

    # --- leases ---

    def acquire_lease(self, app: str, machine_id: str, ttl: int, description: str, *,
                      nonce: str | None = None) -> Lease:
        """A lease for `ttl` seconds (409 if someone else holds one); with `nonce`, refreshes ours.
        Keep TTLs short, refresh in the background, release in `finally` (reference section 8)."""
        if not (is_int(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        return Lease.from_json(self._json(self._call("POST", _machine_path(app, machine_id, "lease"),
                                                     action="acquire_lease", key=machine_id, nonce=nonce,
                                                     json={"ttl": ttl, "description": description})))

    def release_lease(self, app: str, machine_id: str, nonce: str) -> None:
        check_name(nonce, "nonce")
        self._call("DELETE", _machine_path(app, machine_id, "lease"), action="release_lease", key=machine_id,
                   nonce=nonce)

    def get_lease(self, app: str, machine_id: str) -> Lease | None:
        """The current lease, or None when there is none (Fly answers 404 for both "no lease" and "no Machine")."""
        try:
            response = self._call("GET", _machine_path(app, machine_id, "lease"), action="get_lease", key=machine_id)
        except FlyAPIError as error:
            if error.http_status == 404:
                return None
            raise
        return Lease.from_json(self._json(response))

    # --- metadata ---

    def set_metadata(self, app: str, machine_id: str, key: str, value: str, nonce: str | None = None) -> None:
        check_name(key, "key")
        self._call("POST", _machine_path(app, machine_id, "metadata", key), action="set_metadata", key=machine_id,
                   json={"value": value}, nonce=nonce)

    def delete_metadata(self, app: str, machine_id: str, key: str, nonce: str | None = None) -> None:
        check_name(key, "key")
        self._call("DELETE", _machine_path(app, machine_id, "metadata", key), action="delete_metadata",
                   key=machine_id, nonce=nonce)

    # --- org-wide ---

    def list_org_machines(self, org_slug: str, *, page_size: int = MAX_ORG_PAGE,
                          include_deleted: bool = False) -> list[Machine]:
        """Every Machine in the org, following `next_cursor` (a page may be short, even empty, with more to come)."""
        if not (is_int(page_size) and 1 <= page_size <= MAX_ORG_PAGE):
            raise ValueError(f"page_size must be from 1 to {MAX_ORG_PAGE}, got {page_size!r}")
        machines: list[Machine] = []
        cursor = None
        while True:
            params = {"limit": page_size} | _flag("include_deleted", include_deleted)
            if cursor:
                params["cursor"] = cursor
            body = self._json(self._call("GET", _path("orgs", org_slug, "machines"), action="list_org_machines",
                                         key=org_slug, params=params))
            machines += [Machine.from_json(machine) for machine in body.get("machines") or []]
            cursor = body.get("next_cursor")
            if not cursor:
                return machines

    # --- certificates and IPs (the router app holds them; team apps need neither) ---

    def request_certificate(self, app: str, hostname: str) -> Certificate:
        """Adds `hostname` (a wildcard as `*.example.com`) to the app and asks Let's Encrypt for its certificate.
        The answer lists the DNS records to create (`dns_records`); a wildcard is validated by DNS only, through
        the `_acme-challenge` CNAME. 422 when the hostname is already on an app. After an ambiguous failure,
        `get_certificate` tells whether it was added."""
        check_name(hostname, "hostname")
        return Certificate.from_json(self._json(self._call(
            "POST", _path("apps", app, "certificates", "acme"), action="create_acme_certificate", key=app,
            retry=_Retry.UNPROCESSED, json={"hostname": hostname})))

    def get_certificate(self, app: str, hostname: str) -> Certificate | None:
        """The hostname's certificate, or None when the app does not have that hostname."""
        check_name(hostname, "hostname")
        try:
            response = self._call("GET", _path("apps", app, "certificates", hostname), action="get_certificate",
                                  key=app)
        except FlyAPIError as error:
            if error.http_status == 404:
                return None
            raise
        return Certificate.from_json(self._json(response))

    def check_certificate(self, app: str, hostname: str) -> Certificate:
        """Asks Fly to look at the DNS now (rather than at its next background check); `raw["dns_records"]`
        holds what it resolved."""
        check_name(hostname, "hostname")
        return Certificate.from_json(self._json(self._call(
            "POST", _path("apps", app, "certificates", hostname, "check"), action="check_certificate", key=app)))

    def list_certificates(self, app: str, *, hostname_filter: str | None = None,
                          page_size: int = MAX_CERTIFICATE_PAGE) -> list[CertificateSummary]:
        """Every hostname of the app (whose name contains `hostname_filter`), following `next_cursor`."""
        if not (is_int(page_size) and 1 <= page_size <= MAX_CERTIFICATE_PAGE):
            raise ValueError(f"page_size must be from 1 to {MAX_CERTIFICATE_PAGE}, got {page_size!r}")
        certificates: list[CertificateSummary] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if hostname_filter:
                params["filter"] = hostname_filter
            if cursor:
                params["cursor"] = cursor
            body = self._json(self._call("GET", _path("apps", app, "certificates"), action="list_certificates",
                                         key=app, params=params))
            certificates += [CertificateSummary.from_json(entry) for entry in body.get("certificates") or []]
            cursor = body.get("next_cursor")
            if not cursor:
                return certificates

    def delete_certificate(self, app: str, hostname: str) -> None:
        """Removes the hostname and all its certificates from the app."""
        check_name(hostname, "hostname")
        self._call("DELETE", _path("apps", app, "certificates", hostname), action="delete_certificate", key=app)

    def list_ip_assignments(self, app: str) -> list[IPAssignment]:
        """The app's addresses. Apps made through the Machines API have none: Fly's proxy reaches them only
        through fly-replay (DOCS networking/app-services)."""
        body = self._json(self._call("GET", _path("apps", app, "ip_assignments"), action="list_ip_assignments",
                                     key=app))
        return [IPAssignment.from_json(entry) for entry in body.get("ips") or []]

    def assign_ip(self, app: str, ip_type: str, *, region: str | None = None, service_name: str | None = None,
                  network: str | None = None, org_slug: str | None = None) -> IPAssignment:
        """`ip_type`: `shared_v4`, `v4` (dedicated, billed), `v6` or `private_v6` (Flycast, on `network`)."""
        if ip_type not in IP_TYPES:
            raise ValueError(f"ip_type must be one of {sorted(IP_TYPES)}, got {ip_type!r}")
        optional = {"region": region, "service_name": service_name, "network": network, "org_slug": org_slug}
        body = {"type": ip_type} | {name: value for name, value in optional.items() if value is not None}
        return IPAssignment.from_json(self._json(self._call(
            "POST", _path("apps", app, "ip_assignments"), action="assign_ip", key=app, retry=_Retry.UNPROCESSED,
            json=body)))

    def release_ip(self, app: str, ip: str) -> None:
        check_name(ip, "ip")
        self._call("DELETE", _path("apps", app, "ip_assignments", ip), action="release_ip", key=app)

    # --- transport ---

    def _call(self, method: str, path: str, *, action: str, key: str, retry: _Retry = _Retry.TRANSIENT,
              params: Mapping[str, Any] | None = None, json: Any = None, nonce: str | None = None,
              timeout: float | None = None) -> httpx.Response:
        """One API call with rate limiting and retries; raises FlyAPIError unless the answer is 2xx."""
        headers = {NONCE_HEADER: nonce} if nonce else {}
        attempt = 0
        while True:
            attempt += 1
            self._limiter.acquire(action, key)
            started = self.clock()
            retry_after = None
            try:
                response = self._http.request(method, path, params=params, json=json, headers=headers,
                                              timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, _NOT_SENT)
                logger.warning("fly %s %s -> %s after %.0f ms (attempt %d)", method, path, type(exc).__name__,
                               (self.clock() - started) * 1000, attempt)
                may_retry = isinstance(exc, _TRANSIENT_TRANSPORT) and not (sent and retry is _Retry.UNPROCESSED)
                error = FlyAPIError(None, None, f"{type(exc).__name__}: {exc}", None,
                                    ambiguous=sent and retry is _Retry.UNPROCESSED)
                cause: Exception | None = exc
            else:
                status = response.status_code
                request_id = response.headers.get("fly-request-id")
                log = logger.info if status < 400 else logger.warning
                log("fly %s %s -> %d fly-request-id=%s %.0f ms (attempt %d)", method, path, status, request_id,
                    (self.clock() - started) * 1000, attempt)
                if status < 400:
                    return response
                error = _error_from(response,
                                    ambiguous=retry is _Retry.UNPROCESSED and (status == 408 or status >= 500))
                may_retry = _may_retry(retry, error)
                retry_after = _retry_after_seconds(response)
                cause = None
            if not may_retry or attempt == self._max_attempts:
                raise error from cause
            self.sleep(max(self._backoff(attempt), retry_after or 0.0))

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniformly up to an exponentially growing cap (AWS Architecture Blog, 2015)."""
        return self._rng.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return response.json() if response.content else None


def _may_retry(retry: _Retry, error: FlyAPIError) -> bool:
    if error.http_status == 429:
        return True  # refused before any processing: safe even for a create
    if retry is _Retry.UNPROCESSED:
        return False
    if error.http_status == 408:
        return retry is _Retry.TRANSIENT
    return error.transient


def _error_from(response: httpx.Response, *, ambiguous: bool) -> FlyAPIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        message, code = str(body.get("error") or body.get("message") or response.reason_phrase), body.get("status")
    else:
        message, code = (response.text[:200] or response.reason_phrase), None
    return FlyAPIError(response.status_code, code, message, response.headers.get("fly-request-id"),
                       ambiguous=ambiguous)


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """Fly does not promise Retry-After; honour it (in seconds) when it is there."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _path(*segments: str) -> str:
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def _machine_path(app: str, machine_id: str, *rest: str) -> str:
    return _path("apps", app, "machines", machine_id, *rest)


def _flag(name: str, value: bool) -> dict[str, str]:
    return {name: "true"} if value else {}
