"""Fly's proxy (the edge) for one FakeFly: real HTTP on 127.0.0.1, routing by hostname and replaying `fly-replay`.

    proxy = FlyProxy(fake).start()                    # two listeners: public ports 80 and 443 (TLS taken as done)
    proxy.bind("router", router_machine_id, "http://127.0.0.1:8001")    # what answers for that Machine
    proxy.bind("team-a", team_machine_id, "http://127.0.0.1:8002")
    httpx.get(proxy.url(443) + "/", headers={"Host": "a.teams.example"})
    proxy.served, proxy.refused                       # what each Machine received; what the proxy refused
    httpx.get(proxy.flycast_url("router-net") + "/", headers={"Host": "team-a.flycast"})   # from inside a network
    proxy.stop()

A hostname goes to the app holding a certificate for it (or `<app>.fly.dev`) with a public IP
(`FakeFly.app_for_hostname`); the app's Machines that publish the port the request came on share the load
(`FakeFly.route`, which autostarts a stopped one and waits). Any HTTP server can stand in for a Machine.
`flycast_url(network)` plays the proxy as reached from inside a private network: `<app>.flycast` on port 80
reaches an app with a Flycast address allocated in that network (the path a router can take for bodies over
1 MB, which it cannot replay).

A Machine's answer carrying `fly-replay` (header, fields split on `;` or `,`) or `Content-Type:
application/vnd.fly.replay+json` (with `transform`) never reaches the client: the proxy replays the original
request (method, headers, body) to the target with `fly-replay-src: instance=<issuer>;region=<r>;t=<µs>;state=<s>`,
under Fly's rules (DOCS networking/dynamic-request-routing; reference routing-sso-restore.md §1.2-1.4). Where the
docs are silent the proxy chooses, each choice in docs/fly.md: a refused or impossible replay is a 502 page (a
timeout 504) and a `ProxyRefusal`; a client's own `fly-replay-src` is passed on untouched (a replay adds the
proxy's line after it); a replayed request may replay again, up to `MAX_REPLAYS` hops; a fallback may not.
A request on a port whose service has `force_https` is redirected to https by the edge. Replay caching is not
modelled (Fly calls it an optimization, never a guarantee), nor WebSockets.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import urlsplit

from .app import FakeFly, NoRoute, Refused, duration_seconds

logger = logging.getLogger("fakefly.proxy")

MAX_REPLAY_BODY = 1_000_000  # "Requests larger than 1MB cannot be replayed" (bytes, as the issue counts them)
MAX_REPLAYS = 10  # hops one request may be replayed; Fly documents no limit
DEFAULT_REPLAY_TIMEOUT = 60.0  # seconds (the fake's clock) a replay or a request waits for a Machine to start
REPLAY_CONTENT_TYPE = "application/vnd.fly.replay+json"
FALLBACKS = frozenset({"force_self", "prefer_self"})
# Headers of one connection, never forwarded (RFC 9110 section 7.6.1); the proxy frames bodies itself, and has
# read the whole body before forwarding (so no `Expect: 100-continue` either).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "content-length", "expect"})
# What Fly's proxy sets on every request (DOCS networking/request-headers), replacing what a client sent.
_EDGE_HEADERS = frozenset({"fly-client-ip", "fly-forwarded-port", "fly-region", "fly-request-id",
                           "x-forwarded-proto", "x-forwarded-ssl"})
_REPLAY_FIELD = re.compile(r'\s*([A-Za-z_]+)\s*=\s*("(?:[^"]*)"|[^;,]*)\s*(?:[;,]|$)')
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Replay:
    """A `fly-replay` instruction, from either form."""

    app: str | None = None
    instance: str | None = None
    prefer_instance: str | None = None
    regions: tuple[str, ...] = ()
    state: str | None = None
    elsewhere: bool = False
    timeout: float | None = None
    fallback: str | None = None
    path: str | None = None
    delete_headers: tuple[str, ...] = ()
    set_headers: tuple[tuple[str, str], ...] = ()


def parse_replay_header(value: str) -> Replay:
    """`app=team-a;instance=0e28;state=x`, `region="iad,ord"` (a comma list must be quoted); fields may also be
    separated by `,` (the blueprints write it so). Raises ValueError when it is not a replay instruction."""
    fields: dict[str, str] = {}
    position = 0
    value = value.strip()
    while position < len(value):
        found = _REPLAY_FIELD.match(value, position)
        if found is None or found.end() == position:
            raise ValueError(f"fly-replay: cannot read {value[position:]!r}")
        fields[found.group(1).lower()] = found.group(2).strip().strip('"')
        position = found.end()
    return _replay_from(fields)


def parse_replay_json(body: bytes) -> Replay:
    try:
        fields = json.loads(body)
    except ValueError as error:
        raise ValueError(f"{REPLAY_CONTENT_TYPE}: not JSON ({error})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{REPLAY_CONTENT_TYPE}: not an object")
    transform = fields.pop("transform", None) or {}
    fields.pop("cache", None)  # replay caching is not modelled: every request goes through the issuer
    if not isinstance(transform, dict):
        raise ValueError("transform: not an object")
    replay = _replay_from({name: value if isinstance(value, str) else json.dumps(value)
                           for name, value in fields.items()})
    try:
        set_headers = tuple((str(entry["name"]), str(entry["value"])) for entry in transform.get("set_headers", []))
        delete_headers = tuple(str(name) for name in transform.get("delete_headers", []))
    except (TypeError, KeyError) as error:
        raise ValueError(f"transform: {error!r}") from None
    path = transform.get("path")
    if path is not None and not (isinstance(path, str) and path.startswith("/")):
        raise ValueError(f"transform.path: {path!r} is not a path")
    return replace(replay, path=path, delete_headers=delete_headers, set_headers=set_headers)


def _replay_from(fields: Mapping[str, str]) -> Replay:
    fallback = fields.get("fallback") or None
    if fallback is not None and fallback not in FALLBACKS:
        raise ValueError(f"fallback: {fallback!r} is not one of {sorted(FALLBACKS)}")
    try:
        timeout = duration_seconds(fields["timeout"]) if fields.get("timeout") else None
    except Refused as error:
        raise ValueError(f"timeout: {error}") from None
    regions = tuple(region.strip().lower() for region in fields.get("region", "").split(",") if region.strip())
    replay = Replay(app=fields.get("app") or None, instance=fields.get("instance") or None,
                    prefer_instance=fields.get("prefer_instance") or None, regions=regions,
                    state=fields.get("state"), elsewhere=fields.get("elsewhere", "").lower() == "true",
                    timeout=timeout, fallback=fallback)
    if not (replay.app or replay.instance or replay.prefer_instance or replay.regions or replay.elsewhere):
        raise ValueError("a replay names no app, instance, region or elsewhere")
    return replay


@dataclass(frozen=True)
class Delivery:
    """A request a Machine received through the proxy. `kind`: `direct`, `replay` or `fallback`."""

    app: str
    machine_id: str
    port: int
    kind: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body_size: int

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None


@dataclass(frozen=True)
class ProxyRefusal:
    """Something the proxy would not or could not do, answered with an error page. `reason`: `unknown_host`,
    `no_candidate`, `timeout`, `unreachable`, `cross_network`, `cross_org`, `body_too_large`, `invalid_replay`,
    `fallback_replay`, `too_many_replays`."""

    reason: str
    message: str
    hostname: str
    source_app: str | None = None
    source_machine: str | None = None
    replay: Replay | None = None


@dataclass
class _Request:
    method: str
    target: str
    hostname: str
    port: int
    client_ip: str
    headers: list[tuple[str, str]]
    body: IO[bytes]
    body_size: int
    request_id: str
    network: str | None  # the private network a Flycast request comes from; None: from the internet
    flycast_app: str | None = None  # the app whose Flycast address was dialled; None: read from `Host`

    @property
    def replayable(self) -> bool:
        return self.body_size <= MAX_REPLAY_BODY


@dataclass
class _Answer:
    """A Machine's answer. `response` is still open unless the answer was a replay instruction (`replay`)."""

    route_app: str
    machine_id: str
    region: str
    response: http.client.HTTPResponse
    connection: http.client.HTTPConnection
    replay: Replay | None = None
    replay_error: str | None = None


class _Redirect(Exception):
    def __init__(self, location: str):
        super().__init__(location)
        self.location = location


class ProxyError(Exception):
    def __init__(self, status: int, refusal: ProxyRefusal):
        super().__init__(refusal.message)
        self.status = status
        self.refusal = refusal


class FlyProxy:
    def __init__(self, fake: FakeFly, *, region: str = "ord", ports: tuple[int, ...] = (80, 443),
                 replay_timeout: float = DEFAULT_REPLAY_TIMEOUT, upstream_timeout: float = 60.0):
        """`region`: the edge's (`Fly-Region`, `fly-replay-src`'s region). `ports`: the public ports to play;
        each gets its own listener. `replay_timeout`: how long (fake clock) a request or a replay without
        `timeout` waits for a Machine to start. `upstream_timeout`: socket timeout towards a Machine (wall)."""
        self.fake = fake
        self.region = region
        self.ports = ports
        self.replay_timeout = replay_timeout
        self.upstream_timeout = upstream_timeout
        self.served: list[Delivery] = []
        self.refused: list[ProxyRefusal] = []
        self._upstreams: dict[tuple[str, int | None], tuple[str, str, int]] = {}
        self._servers: dict[int, ThreadingHTTPServer] = {}
        self._flycast_servers: dict[tuple[str, str | None], ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._request_ids = itertools.count(1)

    # --- for tests ---------------------------------------------------------------------------------------

    def bind(self, app: str, machine_id: str, url: str, *, internal_port: int | None = None) -> None:
        """Requests for that Machine (of that app) go to `url` (`http://127.0.0.1:PORT`); with `internal_port`,
        only those for the service on that internal port."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"{url!r}: an http://host:port address")
        with self._lock:
            self._upstreams[(machine_id, internal_port)] = (app, parts.hostname, parts.port)

    def start(self) -> FlyProxy:
        for port in self.ports:
            self._servers[port] = self._listen(port, None)
        return self

    def _listen(self, port: int, network: str | None, flycast_app: str | None = None) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self, port, network, flycast_app))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"fakefly-proxy-{network or port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return server

    def url(self, port: int = 80) -> str:
        """Where to send a request that arrives on public `port` (set the `Host` header to the hostname)."""
        return f"http://127.0.0.1:{self._servers[port].server_port}"

    def flycast_url(self, network: str, app: str | None = None) -> str:
        """Where a Machine on private `network` sends `http://<app>.flycast/`: Flycast is HTTP on port 80,
        load-balanced and autostarted like public traffic. Without `app`, one listener for the network that reads
        the app from `Host: <app>.flycast`; with `app`, a listener standing for that app's Flycast address (the
        app is the address dialled, `Host` is passed on as sent, as Fly's proxy does for an IP)."""
        with self._lock:
            if (network, app) not in self._flycast_servers:
                self._flycast_servers[(network, app)] = self._listen(80, network, app)
            return f"http://127.0.0.1:{self._flycast_servers[(network, app)].server_port}"

    def stop(self) -> None:
        for server in [*self._servers.values(), *self._flycast_servers.values()]:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers.clear()
        self._flycast_servers.clear()
        self._threads.clear()

    def __enter__(self) -> FlyProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def served_by(self, app: str) -> list[Delivery]:
        """What the Machines of `app` received (the isolation tests' question: did team B see anything?)."""
        with self._lock:
            return [delivery for delivery in self.served if delivery.app == app]

    # --- one request --------------------------------------------------------------------------------------

    def handle(self, request: _Request) -> _Answer:
        """The answer the client gets (open), or ProxyError."""
        if request.network is None:
            app = self.fake.app_for_hostname(request.hostname)
            missing = f"no app holds {request.hostname} with a public IP"
        else:
            app = self.fake.app_for_flycast(f"{request.flycast_app}.flycast" if request.flycast_app
                                            else request.hostname, request.network)
            missing = (f"{request.flycast_app or request.hostname} is no app with a Flycast address in network "
                       f"{request.network}")
        if app is None:
            raise self._refuse(404, ProxyRefusal("unknown_host", missing, request.hostname))
        if request.network is None and request.port != 443 and self.fake.forces_https(app, request.port):
            raise _Redirect(f"https://{request.hostname}{request.target}")
        answer = self._deliver(request, app, "direct", self._deadline(None))
        hops = 0
        while answer.replay is not None or answer.replay_error is not None:
            issuer = answer
            if answer.replay_error is not None:
                raise self._refuse(502, ProxyRefusal("invalid_replay", answer.replay_error, request.hostname,
                                                     issuer.route_app, issuer.machine_id))
            replay = answer.replay
            hops += 1
            refusal = self._replay_refusal(request, issuer, replay, hops)
            if refusal is not None:
                raise self._refuse(502, refusal)
            answer = self._replay(request, issuer, replay)
        return answer

    def _replay_refusal(self, request: _Request, issuer: _Answer, replay: Replay, hops: int) -> ProxyRefusal | None:
        def refusal(reason: str, message: str) -> ProxyRefusal:
            return ProxyRefusal(reason, message, request.hostname, issuer.route_app, issuer.machine_id, replay)

        if not request.replayable:
            return refusal("body_too_large", f"a request body of {request.body_size} bytes cannot be replayed "
                                             f"(more than {MAX_REPLAY_BODY})")
        if hops > MAX_REPLAYS:
            return refusal("too_many_replays", f"replayed {MAX_REPLAYS} times already")
        refused = self.fake.replay_refusal(issuer.route_app, replay.app or issuer.route_app)
        return refusal(*refused) if refused is not None else None

    def _replay(self, request: _Request, issuer: _Answer, replay: Replay) -> _Answer:
        target = replay.app or issuer.route_app
        started = self.fake.clock.now()
        source = (f"instance={issuer.machine_id};region={issuer.region};t={int(started * 1_000_000)}"
                  + (f";state={replay.state}" if replay.state is not None else ""))
        deleted = {name.lower() for name in replay.delete_headers} | {name.lower() for name, _ in replay.set_headers}
        headers = [(name, value) for name, value in request.headers if name.lower() not in deleted]
        headers += [*replay.set_headers, ("fly-replay-src", source)]
        try:
            return self._deliver(request, target, "replay", self._deadline(replay.timeout), headers=headers,
                                 target=replay.path or request.target, instance=replay.instance,
                                 prefer_instance=replay.prefer_instance, regions=replay.regions,
                                 exclude=issuer.machine_id if replay.elsewhere else None)
        except ProxyError as error:
            if replay.fallback is None or error.refusal.reason not in ("no_candidate", "timeout"):
                raise
            elapsed_ms = int((self.fake.clock.now() - started) * 1000)
            failed = (f"instance={replay.instance or ''};app={target};region={','.join(replay.regions)};"
                      f"replay_source={issuer.machine_id};reason={error.refusal.reason};elapsed_ms={elapsed_ms}")
            fallback = self._deliver(request, issuer.route_app, "fallback", self._deadline(None),
                                     headers=[*request.headers, ("fly-replay-failed", failed)],
                                     instance=issuer.machine_id if replay.fallback == "force_self" else None)
            if fallback.replay is not None or fallback.replay_error is not None:
                fallback.connection.close()
                raise self._refuse(502, ProxyRefusal("fallback_replay", "a fallback request cannot replay",
                                                     request.hostname, fallback.route_app, fallback.machine_id,
                                                     fallback.replay)) from None
            return fallback

    def _deadline(self, timeout: float | None) -> float:
        return self.fake.clock.now() + (self.replay_timeout if timeout is None else timeout)

    def _deliver(self, request: _Request, app: str, kind: str, deadline: float, *,
                 headers: list[tuple[str, str]] | None = None, target: str | None = None, **choice: Any) -> _Answer:
        try:
            route = self.fake.route(app, request.port, deadline=deadline, **choice)
        except NoRoute as no_route:
            raise self._refuse(504 if no_route.reason == "timeout" else 502,
                               ProxyRefusal(no_route.reason, str(no_route), request.hostname)) from None
        with self._lock:
            upstream = (self._upstreams.get((route.machine_id, route.internal_port))
                        or self._upstreams.get((route.machine_id, None)))
        if upstream is None or upstream[0] != app:
            raise self._refuse(502, ProxyRefusal("unreachable", f"Machine {route.machine_id} of app {app} has no "
                                                                f"upstream bound (FlyProxy.bind)", request.hostname))
        sent = self._forwarded_headers(request, headers if headers is not None else request.headers)
        if route.preferred_unavailable:
            sent.append(("fly-preferred-instance-unavailable", route.preferred_unavailable))
        target = target or request.target
        connection = http.client.HTTPConnection(upstream[1], upstream[2], timeout=self.upstream_timeout)
        try:
            connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in sent:
                connection.putheader(name, value)
            if request.body_size or request.method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(request.body_size))
            connection.endheaders()
            request.body.seek(0)
            while chunk := request.body.read(_CHUNK):
                connection.send(chunk)
            response = connection.getresponse()
        except OSError as error:
            connection.close()
            raise self._refuse(502, ProxyRefusal("unreachable", f"Machine {route.machine_id}: {error}",
                                                 request.hostname)) from None
        with self._lock:
            self.served.append(Delivery(app, route.machine_id, request.port, kind, request.method, target,
                                        tuple(sent), request.body_size))
        answer = _Answer(app, route.machine_id, route.region, response, connection)
        replay_header = response.getheader("fly-replay")
        content_type = (response.getheader("content-type") or "").split(";")[0].strip().lower()
        if replay_header is None and content_type != REPLAY_CONTENT_TYPE:
            return answer
        try:
            answer.replay = (parse_replay_json(response.read()) if content_type == REPLAY_CONTENT_TYPE
                             else parse_replay_header(", ".join(response.headers.get_all("fly-replay"))))
        except ValueError as error:
            answer.replay_error = str(error)
        connection.close()
        return answer

    def _forwarded_headers(self, request: _Request, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        secure = request.port == 443
        kept = [(name, value) for name, value in headers
                if name.lower() not in _HOP_BY_HOP | _EDGE_HEADERS | {"x-forwarded-for", "via"}]
        earlier = [value for name, value in headers if name.lower() == "x-forwarded-for"]
        via = [value for name, value in headers if name.lower() == "via"]
        return kept + [
            ("Fly-Client-IP", request.client_ip), ("Fly-Forwarded-Port", str(request.port)),
            ("Fly-Region", self.region), ("Fly-Request-Id", request.request_id),
            ("X-Forwarded-For", ", ".join([*earlier, request.client_ip])),
            ("X-Forwarded-Proto", "https" if secure else "http"), ("X-Forwarded-SSL", "on" if secure else "off"),
            ("Via", ", ".join([*via, "1.1 fly.io"]))]

    def _refuse(self, status: int, refusal: ProxyRefusal) -> ProxyError:
        logger.info("fly proxy %s: %s", refusal.reason, refusal.message)
        with self._lock:
            self.refused.append(refusal)
        return ProxyError(status, refusal)

    def next_request_id(self) -> str:
        return f"{next(self._request_ids):016x}-{self.region}"


def _handler_for(proxy: FlyProxy, port: int, network: str | None,
                 flycast_app: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(_EdgeHandler):
        pass

    Handler.proxy = proxy
    Handler.public_port = port
    Handler.network = network
    Handler.flycast_app = flycast_app
    return Handler


class _EdgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FlyProxy
    public_port: int
    network: str | None
    flycast_app: str | None

    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        request_id = self.proxy.next_request_id()
        try:
            body, size = self._read_body()
        except ValueError as error:
            self._page(400, f"bad request: {error}", request_id)
            return
        with body:
            host = (self.headers.get("Host") or "").strip()
            hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            request = _Request(self.command, self.path, hostname.lower(), self.public_port, self.client_address[0],
                               list(self.headers.items()), body, size, request_id, self.network, self.flycast_app)
            try:
                answer = self.proxy.handle(request)
            except ProxyError as error:
                self._page(error.status, error.refusal.message, request_id)
                return
            except _Redirect as redirect:
                self._page(301, f"moved to {redirect.location}", request_id, location=redirect.location)
                return
            except Exception:
                self._page(500, "fakefly's proxy failed (a bug in the fake: see the traceback)", request_id)
                raise
            try:
                self._relay(answer)
            finally:
                answer.connection.close()

    def _read_body(self) -> tuple[IO[bytes], int]:
        """The request body, kept for replays: in memory up to the replay limit, on disk beyond."""
        spool = tempfile.SpooledTemporaryFile(max_size=MAX_REPLAY_BODY + 1)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise ValueError("malformed chunked body") from None
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass  # trailers
                    break
                _copy(self.rfile, spool, size)
                self.rfile.readline(8)
        else:
            length = self.headers.get("Content-Length")
            if length is not None and not length.strip().isdigit():
                raise ValueError(f"Content-Length {length!r}")
            _copy(self.rfile, spool, int(length or 0))
        return spool, spool.tell()

    def _relay(self, answer: _Answer) -> None:
        response = answer.response
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        length = response.getheader("Content-Length")
        bodiless = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        if bodiless:
            self.send_header("Content-Length", length or "0")
        elif length is not None:
            self.send_header("Content-Length", length)
        else:
            self.close_connection = True  # the body ends when the connection does
            self.send_header("Connection", "close")
        self.end_headers()
        if not bodiless:
            shutil.copyfileobj(response, self.wfile, _CHUNK)
        self.wfile.flush()

    def _page(self, status: int, message: str, request_id: str, *, location: str | None = None) -> None:
        body = (f"Fly proxy (fakefly): {message}\nrequest id {request_id}\n").encode()
        self.send_response_only(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Fly-Request-Id", request_id)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


def _copy(source: IO[bytes], destination: IO[bytes], size: int) -> None:
    while size > 0:
        chunk = source.read(min(size, _CHUNK))
        if not chunk:
            raise ValueError("the body ended early")
        destination.write(chunk)
        size -= len(chunk)


__all__ = ["MAX_REPLAYS", "MAX_REPLAY_BODY", "Delivery", "FlyProxy", "ProxyRefusal", "Replay",
           "parse_replay_header", "parse_replay_json"]
