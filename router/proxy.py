"""The router as an ASGI application: the routing decision (router/decision.py), executed two ways.

- `fly`: the router process group on Fly. A routed request is answered with a replay
  (`application/vnd.fly.replay+json`: the team's app and Machine, the team's routing secret as `state`) and Fly's
  proxy replays it, starting a stopped Machine on the way. A request Fly cannot replay (a body over
  `CLOUDCTL_ROUTER_REPLAY_MAX_BODY`, 1 MB, or of unknown length) is reverse-proxied by the router itself to the
  Machine's private address (`CLOUDCTL_ROUTER_FLY_UPSTREAM`: `<machine>.vm.<app>.internal:8080`), with the
  same `fly-replay-src` Fly would set.
  When a replay fails (`fly-replay-failed`: the Machine did not start in time), the "waking up" page.
- `embedded`: `manage.py dev`'s router on `http://<slug>.localhost:<port>/`, playing Fly's proxy and the router
  in one. It forwards to the local instance (aiohttp's client), streaming both bodies; a refused connection (the instance is stopped,
  scaled to zero, or restarting) wakes it through the task worker when it is asleep and holds the request,
  retrying, until it answers or `CLOUDCTL_ROUTER_WAKE_TIMEOUT` passes (then the "waking up" page). A refused
  connection never reached the instance, so retrying is safe for a POST too.

Either way the instance receives its own name as `Host`, never a client's `fly-replay-src`, and no control-plane
cookie (router/decision.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import aiohttp
from django.conf import settings
from multidict import CIMultiDict
from yarl import URL

from . import pages
from .decision import Decision, NotFound, Route, TeamEntry, control_plane_cookie_present, decide_entry, team_slug
from .table import ABSENT, RoutingTable

logger = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) and what the router sets itself: never passed on from a client.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate"})
SET_BY_ROUTER = frozenset({b"host", b"fly-replay-src", b"x-forwarded-host", b"forwarded"})
NOT_FORWARDED = HOP_BY_HOP | SET_BY_ROUTER
RESPONSE_HOP_BY_HOP = HOP_BY_HOP | {b"fly-replay", b"fly-replay-src"}
# Methods a server must treat as safe to repeat (RFC 9110 9.2.2): retried on a dropped kept-alive connection.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Between attempts at a refused connection: short, so a held request goes through within 50 ms of the instance
# listening (an attempt at a closed loopback port costs next to nothing).
RETRY_DELAYS = (0.01, 0.02, 0.03, 0.05)
# Seconds: to connect (then the attempt counts as refused), and between two reads of the answer.
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=300)
# aiohttp adds these when a request lacks them: the router sends what the client sent, nothing more.
NOT_ADDED = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# The platform's check of the router itself: answered only for a name that is no team's (a Machine's address).
HEALTH_CHECK_PATH = "/healthz"


class ClientDisconnected(Exception):
    pass


def control_plane_cookies() -> frozenset[str]:
    """The control plane's credentials. Not Django's `messages` cookie, which is none: any team's page can set
    one on a parent domain it shares with the others (cookie tossing), and the router would then drop every
    team's own cookies (their sign-in) from that browser's requests."""
    return frozenset({settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME})


def replay_source(state: str) -> bytes:
    """What Fly's proxy adds to a replayed request (`fly-replay-src`), `state` being the router's."""
    return f"instance=router;region=local;t={time.time_ns() // 1000};state={state}".encode()


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's declared length; None when it is chunked or the header is malformed."""
    lengths = [value for name, value in headers if name.lower() == b"content-length"]
    if any(name.lower() == b"transfer-encoding" for name, _ in headers):
        return None
    if not lengths:
        return 0
    if len(set(lengths)) != 1 or not lengths[0].isdigit():
        return None
    return int(lengths[0])


class Router:
    def __init__(self, *, mode: str, table: RoutingTable | None = None,
                 wake: Callable[[int], object] | None = None):
        if mode not in ("embedded", "fly"):
            raise ValueError(f"unknown router mode {mode!r}: embedded or fly")
        self.mode = mode
        self.table = table or RoutingTable()
        if wake is None:
            from .services import wake_instance as wake
        self.wake = wake
        self._session: aiohttp.ClientSession | None = None
        # The last decision for each team, kept while the table hands out the same entry (it reads a new one
        # when its own copy is too old): the decision's secret is an HMAC, not worth computing per request.
        self._decisions: dict[str, tuple[TeamEntry, str, Decision]] = {}
        self._control_plane_cookies = control_plane_cookies()

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp's client (its HTTP parser is C): no cookie jar (a tenant's cookies are never kept), no
        redirects, no decompression, no environment proxies. Made on the event loop, at the first request."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=15),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False,
                timeout=UPSTREAM_TIMEOUT, skip_auto_headers=NOT_ADDED)
        return self._session

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":  # websockets: not routed yet (Datasette's own pages use none)
            return await send({"type": "websocket.close", "code": 1008})
        headers = scope["headers"]
        hosts = [value for name, value in headers if name.lower() == b"host"]
        # Exactly one Host: two (or none) are a request smuggling attempt, never guessed at.
        host = hosts[0] if len(hosts) == 1 else None
        if self.mode == "fly" and any(name.lower() == b"fly-replay-failed" for name, _ in headers):
            failure = next(value for name, value in headers if name.lower() == b"fly-replay-failed")
            logger.warning("router: replay failed (%s)", failure.decode("latin-1")[:300])
            return await self._page(send, pages.waking(team_slug(host, settings.TEAMS_DOMAIN) or "?"))
        if self.mode == "fly" and any(name.lower() == b"fly-replay-src" for name, _ in headers):
            # Fly's edge sends the router a client's request as it came: one carrying `fly-replay-src` was
            # replayed here by an app (a tenant bouncing its visitor's request, a name of its choice set) or
            # forged by a client. Answering it with a replay would vouch, with a team's secret, for a request a
            # tenant shaped.
            return await self._page(send, pages.replayed())
        if scope["path"] == HEALTH_CHECK_PATH and team_slug(host, settings.TEAMS_DOMAIN) is None:
            return await self._page(send, pages.healthy())
        decision = await self._decide(host)
        if not isinstance(decision, Route):
            return await self._page(send, pages.for_decision(decision))
        if not self._upstream(decision):  # a team this executor cannot reach (another backend's)
            logger.error("router (%s): team %s has no address it can route to", self.mode, decision.slug)
            return await self._page(send, pages.unavailable(decision.slug))
        declared = _declared_length(headers)
        if self.mode == "fly" and declared is not None and declared <= settings.ROUTER_REPLAY_MAX_BODY:
            return await self._replay(send, decision, headers)
        await self._proxy(scope, receive, send, decision)

    async def _decide(self, host) -> Decision:
        """router/decision.py's `decide`, its table read off the event loop and its answer kept per entry."""
        domain = settings.TEAMS_DOMAIN
        slug = team_slug(host, domain)
        if slug is None:
            return NotFound()
        entry = self.table.cached(slug)
        if entry is ABSENT:
            entry = await asyncio.to_thread(self.table.lookup, slug)  # the database is read off the event loop
        if entry is None:
            return NotFound()
        kept = self._decisions.get(slug)
        if kept is not None and kept[0] is entry and kept[1] == domain:
            return kept[2]
        decision = decide_entry(entry, domain)
        self._decisions[slug] = (entry, domain, decision)
        return decision

    # --- Fly: replay ------------------------------------------------------------------------------------

    async def _replay(self, send, route: Route, headers) -> None:
        replay = {"app": route.app, "instance": route.machine, "state": route.secret,
                  "timeout": f"{int(settings.ROUTER_WAKE_TIMEOUT)}s", "fallback": "force_self"}
        cookies = b"; ".join(value for name, value in headers if name.lower() == b"cookie").decode("latin-1")
        if control_plane_cookie_present(cookies, self._control_plane_cookies):
            replay["transform"] = {"delete_headers": ["cookie"]}
        body = json.dumps(replay).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/vnd.fly.replay+json"),
                                (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    # --- both: reverse proxy ----------------------------------------------------------------------------

    def _upstream(self, route: Route) -> str:
        """Where this executor sends the team's requests; empty when the team runs where it cannot reach."""
        if self.mode == "fly":
            if not (route.app and route.machine):
                return ""
            return settings.ROUTER_FLY_UPSTREAM.format(machine=route.machine, app=route.app)
        return route.upstream

    def _request_headers(self, headers, route: Route) -> CIMultiDict:
        """The client's headers but hop-by-hop ones and those the router sets; a chunked body is sent chunked
        again (aiohttp does so for a body of unknown length)."""
        cookies = b"; ".join(value for name, value in headers if name.lower() == b"cookie").decode("latin-1")
        drop_cookies = cookies and control_plane_cookie_present(cookies, self._control_plane_cookies)
        forwarded = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
            if name.lower() not in NOT_FORWARDED and not (drop_cookies and name.lower() == b"cookie"))
        forwarded.add("Host", route.hostname)
        forwarded.add("fly-replay-src", replay_source(route.secret).decode())
        return forwarded

    async def _proxy(self, scope, receive, send, route: Route) -> None:
        method = scope["method"]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        if not target.startswith(b"/"):  # an absolute-form target: only its path goes on, to the routed host
            return await self._page(send, pages.bad_request("The request target must be a path."))
        has_body = _declared_length(scope["headers"]) != 0
        sent = {"started": False}

        async def body():
            sent["started"] = True
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected()
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return

        content = body() if has_body else None
        deadline = time.monotonic() + settings.ROUTER_WAKE_TIMEOUT
        attempt = 0
        woken = False
        while True:
            # The target as the client sent it, percent-encoding included (`encoded`: never re-quoted).
            url = URL(self._upstream(route).rstrip("/") + target.decode("latin-1"), encoded=True)
            try:
                response = await self.session.request(
                    method, url, headers=self._request_headers(scope["headers"], route), data=content,
                    allow_redirects=False)
                break
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                pass  # refused: nothing reached the instance, so any method may be sent again
            except aiohttp.ServerDisconnectedError as error:
                # A kept-alive connection the instance closed as it stopped: retried only when nothing of the
                # request's body went out and repeating it is safe.
                if sent["started"] or method not in IDEMPOTENT:
                    logger.warning("router: team %s dropped a %s (%s)", route.slug, method, error)
                    return await self._page(send, pages.unavailable(route.slug))
            except ClientDisconnected:
                return
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:  # the request may have been served
                logger.warning("router: team %s did not answer a %s (%s)", route.slug, method, error)
                return await self._page(send, pages.unavailable(route.slug))
            if sent["started"]:  # the body began to go out and the connection failed: the body is gone
                return await self._page(send, pages.unavailable(route.slug))
            if not woken and self.mode == "embedded":
                woken = True
                await asyncio.to_thread(self.wake, route.team_id)
            if time.monotonic() >= deadline:
                return await self._page(send, pages.waking(route.slug))
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1
            fresh = await self._decide(route.hostname.encode())
            if not isinstance(fresh, Route):
                return await self._page(send, pages.for_decision(fresh))
            route = fresh  # it may have come back on another port
        try:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [(name, value) for name, value in response.raw_headers
                                    if name.lower() not in RESPONSE_HOP_BY_HOP]})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            logger.warning("router: team %s's answer broke off (%s)", route.slug, error)
        finally:
            response.release()

    async def _page(self, send, page: pages.Page) -> None:
        await send({"type": "http.response.start", "status": page.status,
                    "headers": [(name.encode(), value.encode()) for name, value in page.headers]})
        await send({"type": "http.response.body", "body": page.body})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
