"""Single sign-on for the team's Datasette, and the team's roles as Datasette permissions (docs/sso.md §4).

Loaded on every instance (`--plugins-dir`). Its ASGI gate is the outermost middleware (`trylast`) but for the
router guard (router_guard.py, when routed), which it puts outside itself: a request
reaches Datasette, or a customer plugin, only with an actor whose membership the control plane confirmed within
the last `CLOUDCTL_SSO_REVALIDATE_SECONDS`. The platform's health check path and the sign-in callback are the
only exceptions.

- No actor: browsers (GET/HEAD not asking for JSON) are sent to the control plane's authorize endpoint with a
  fresh `state` and PKCE challenge, kept with the path to come back to in a signed cookie scoped to `/-/sso/`;
  anything else (API clients, non-GET) gets `401` JSON, since a redirect to a sign-in page means nothing to them.
- `/-/sso/callback`: the state must match the cookie; the code is redeemed with the team token; Datasette's signed
  `ds_actor` cookie gets `{"id", "email", "sso": <grant id>}`; back to the saved local path.
- An actor (the `ds_actor` cookie, or a Datasette API token `dstok_...`, which names the user): its role is kept
  in memory per grant (per user for API tokens) and asked again of the control plane when older than the
  revalidation interval; one request in flight per grant, none on a hit. A refusal drops the actor at once
  (browser: cookie cleared, sent to sign in; API token: 403); an unreachable control plane refuses too (503).
  The role is never read from a cookie: the cookie names the grant, the control plane says the role.
"""

# No `from __future__ import annotations`: dataclasses read it from sys.modules, where --plugins-dir modules are not.
import asyncio
import base64
import contextvars
import dataclasses
import hashlib
import hmac
import html
import importlib.util
import os
import secrets
import sys
import time
import urllib.parse
import weakref
from pathlib import Path

import httpx
from datasette import hookimpl
from datasette.actor_auth_cookie import actor_from_request as cookie_actor
from datasette.permissions import PermissionSQL
from datasette.tokens import TokenInvalid
from datasette.utils.asgi import Request, Response
from itsdangerous import BadSignature

CALLBACK_PATH = "/-/sso/callback"
STATE_COOKIE = "cloudctl_sso"
STATE_COOKIE_PATH = "/-/sso/"
STATE_NAMESPACE = "cloudctl-sso-state"
STATE_LIFETIME_SECONDS = 600
LONGEST_REVALIDATE_SECONDS = 60
# The API's base may be given as the credentials URL (instance/README.md: CLOUDCTL_URL).
CREDENTIALS_PATH = "/private/v1/credentials"
TOKEN_PATH = "/private/v1/sso/token"
ACTOR_PATH = "/private/v1/sso/actor"
# As credential_helper.py: a request to the control plane takes at most this long; redirects are never
# followed (they would carry the team token elsewhere).
REQUEST_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Grants and users remembered before the ones not checked within an interval are forgotten.
CACHE_PRUNE_SIZE = 10_000
MAX_CODE_LENGTH = 512
USER_AGENT = "cloudctl-instance-sso/1"

# docs/sso.md "The roles". Datasette 1.0a41 has no create-token action: any actor with an id may create an API
# token for itself (not from a token); the token names the user, so it has the user's current role and dies with
# the membership at the next revalidation.
VIEWER_ACTIONS = frozenset({
    "view-instance", "view-database", "view-database-download", "view-table", "view-query", "execute-sql",
})
MEMBER_ACTIONS = VIEWER_ACTIONS | {"upload-csvs", "insert-row", "update-row", "delete-row"}
ADMIN_ACTIONS = MEMBER_ACTIONS | {
    "create-table", "alter-table", "drop-table", "set-column-type", "create-view", "drop-view", "edit-schema",
    "execute-write-sql",
}
ROLE_ACTIONS = {"viewer": VIEWER_ACTIONS, "member": MEMBER_ACTIONS, "admin": ADMIN_ACTIONS, "owner": ADMIN_ACTIONS}
# Datasette's /-/versions.json (the platform's health check path) needs view-instance: granted to anonymous for the
# health check's own request only (the gate sets it around that request, which runs in its task).
HEALTH_CHECK_ACTIONS = frozenset({"view-instance"})
serving_health_check = contextvars.ContextVar("serving_health_check", default=False)
# Every action the roles decide: allowed to the roles that have it, denied to an actor without a current role (deny
# beats Datasette's default allow of the viewer actions).
GOVERNED_ACTIONS = ADMIN_ACTIONS


def global_rule(allow: bool, reason: str) -> PermissionSQL:
    """A rule for every resource, made once. Not PermissionSQL.allow, whose every call names a new parameter: each
    check's SQL would then be new text, compiled afresh by SQLite (and its parameter by `re`) on every check."""
    return PermissionSQL(sql=f"SELECT NULL AS parent, NULL AS child, {int(allow)} AS allow, '{reason}' AS reason")


HEALTH_CHECK_RULE = global_rule(True, "the platform health check")
NO_ROLE_RULE = global_rule(False, "no current role in the team")
ROLE_RULES = {role: global_rule(True, f"team role {role}") for role in ROLE_ACTIONS}


def log(message: str) -> None:
    print(f"cloudctl-instance: sso: {message}", file=sys.stderr, flush=True)


class ControlPlaneUnavailable(Exception):
    """The control plane could not say whether an actor is still a member; the message is safe to show."""


@dataclasses.dataclass(frozen=True)
class Settings:
    team_id: str
    team_url: str
    authorize_url: str
    api_base: str
    token: str
    revalidate_seconds: float

    @classmethod
    def from_environ(cls, environ) -> "Settings | None":
        """None when a setting is missing or malformed: the gate then refuses everything (fail closed)."""
        values = {name: environ.get(name, "").strip() for name in (
            "CLOUDCTL_TEAM_ID", "CLOUDCTL_TEAM_URL", "CLOUDCTL_SSO_AUTHORIZE_URL", "CLOUDCTL_URL", "CLOUDCTL_TOKEN")}
        missing = [name for name, value in values.items() if not value]
        try:
            revalidate = float(environ.get("CLOUDCTL_SSO_REVALIDATE_SECONDS", "") or LONGEST_REVALIDATE_SECONDS)
        except ValueError:
            revalidate = 0.0
        urls = (values["CLOUDCTL_TEAM_URL"], values["CLOUDCTL_SSO_AUTHORIZE_URL"], values["CLOUDCTL_URL"])
        if missing or not all(urllib.parse.urlsplit(url).scheme in ("http", "https") for url in urls) \
                or not 0 < revalidate:
            log(f"not configured ({', '.join(missing) or 'a malformed URL or revalidation interval'}): "
                "refusing every request but the health check")
            return None
        api_base = values["CLOUDCTL_URL"].rstrip("/")
        if api_base.endswith(CREDENTIALS_PATH):
            api_base = api_base[:-len(CREDENTIALS_PATH)]
        team_url = values["CLOUDCTL_TEAM_URL"]
        return cls(
            team_id=values["CLOUDCTL_TEAM_ID"],
            team_url=team_url if team_url.endswith("/") else team_url + "/",
            authorize_url=values["CLOUDCTL_SSO_AUTHORIZE_URL"],
            api_base=api_base,
            token=values["CLOUDCTL_TOKEN"],
            revalidate_seconds=min(revalidate, LONGEST_REVALIDATE_SECONDS),
        )

    @property
    def redirect_uri(self) -> str:
        return self.team_url + CALLBACK_PATH.lstrip("/")

    @property
    def secure_cookies(self) -> bool:
        return self.team_url.startswith("https:")


@dataclasses.dataclass(frozen=True)
class Standing:
    """What the control plane last said of a grant or a user: its role, or None when refused."""

    role: str | None
    checked_at: float


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def local_path(value: str) -> str:
    """`value` when it is a path on this host, else `/`: never `//host`, `/\\host`, a scheme, control characters
    (browsers read `\\` as `/` and drop tabs and newlines, so those could still leave the host)."""
    is_local = (value.startswith("/") and not value.startswith("//") and "\\" not in value
                and not any(ord(character) < 0x20 or ord(character) == 0x7F for character in value))
    if not is_local or value.split("?")[0] == CALLBACK_PATH:
        return "/"
    return value


def standing_key(actor) -> tuple[str, str] | None:
    """Which grant (browser) or user (API token) an actor's role is kept under; None for any other actor."""
    if not isinstance(actor, dict) or not isinstance(actor.get("id"), str):
        return None
    if actor.get("token"):
        return ("user", actor["id"])
    if isinstance(actor.get("sso"), str) and actor["sso"]:
        return ("session", actor["sso"])
    return None


class TeamAuth:
    """The settings, the roles' cache and the control plane's client of one Datasette."""

    def __init__(self, datasette, settings: Settings | None, health_path: str):
        self.datasette = datasette
        self.settings = settings
        # Open even when sign-in is not configured: it says whether the process serves, nothing more.
        self.health_path = health_path
        self.standings: dict[tuple[str, str], Standing] = {}
        self.in_flight: dict[tuple[str, str], asyncio.Future] = {}
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: no proxy from the environment ever sees the team token.
            self._client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT, follow_redirects=False, trust_env=False,
                                             headers={"User-Agent": USER_AGENT})
        return self._client

    # --- the control plane ----------------------------------------------------------------------------------

    async def post(self, path: str, body: dict) -> httpx.Response:
        try:
            return await self.client.post(self.settings.api_base + path, json=body,
                                          headers={"Authorization": f"Bearer {self.settings.token}"})
        except httpx.HTTPError as error:
            raise ControlPlaneUnavailable(f"the control plane is unreachable ({type(error).__name__})") from None

    def interval(self, answer: dict) -> float:
        suggested = answer.get("revalidate_after")
        if isinstance(suggested, (int, float)) and not isinstance(suggested, bool) and suggested > 0:
            return min(float(suggested), self.settings.revalidate_seconds)
        return self.settings.revalidate_seconds

    def remember(self, key, role: str | None, interval: float) -> Standing:
        now = time.monotonic()
        if len(self.standings) >= CACHE_PRUNE_SIZE:
            self.standings = {key: standing for key, standing in self.standings.items()
                              if now - standing.checked_at < self.settings.revalidate_seconds}
        # Stored as if checked earlier when the control plane asks for a shorter interval than ours.
        standing = Standing(role, now - (self.settings.revalidate_seconds - interval))
        self.standings[key] = standing
        return standing

    async def revalidate(self, key, actor_id: str) -> Standing:
        kind, value = key
        response = await self.post(ACTOR_PATH, {kind: value})
        # 403: no longer a member; 400: no grant or user the control plane could know (a token made with the
        # secret for an id of no user): no access either way, not an outage.
        if response.status_code in (400, 403):
            return self.remember(key, None, self.settings.revalidate_seconds)
        answer = _json(response)
        actor = answer.get("actor") if isinstance(answer, dict) else None
        if response.status_code != 200 or not isinstance(actor, dict):
            raise ControlPlaneUnavailable(f"the control plane answered {response.status_code} when asked who this is")
        if actor.get("role") not in ROLE_ACTIONS or str(actor.get("id")) != actor_id:
            # Another user than the cookie's, or a role this instance does not know: no access, never a guess.
            return self.remember(key, None, self.settings.revalidate_seconds)
        return self.remember(key, actor["role"], self.interval(answer))

    async def standing(self, key, actor_id: str) -> Standing:
        """The current standing, asking the control plane when the one kept is older than the interval."""
        kept = self.standings.get(key)
        if kept is not None and time.monotonic() - kept.checked_at < self.settings.revalidate_seconds:
            return kept
        pending = self.in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self.revalidate(key, actor_id))
            self.in_flight[key] = pending
            pending.add_done_callback(lambda _: self.in_flight.pop(key, None))
        # Shielded: a client hanging up must not cancel the answer other requests wait for.
        return await asyncio.shield(pending)

    def role(self, actor) -> str | None:
        """The role of Datasette's actor for this request, from the cache only (the gate just refreshed it)."""
        key = standing_key(actor)
        kept = self.standings.get(key) if key else None
        # Twice the interval: the gate refreshed it when the request began; a long request may check later.
        if kept is None or time.monotonic() - kept.checked_at >= 2 * self.settings.revalidate_seconds:
            return None
        return kept.role

    # --- the gate -------------------------------------------------------------------------------------------

    def wrap(self, app):
        async def gate(scope, receive, send):
            if scope["type"] not in ("http", "websocket"):
                return await app(scope, receive, send)
            if scope["type"] == "http" and scope["path"] == self.health_path and scope["method"] in ("GET", "HEAD"):
                serving = serving_health_check.set(True)
                try:
                    return await app(scope, receive, send)
                finally:
                    serving_health_check.reset(serving)
            request = Request(scope, receive)
            if self.settings is None:
                response = refusal(request, 503, "Sign-in is not configured on this instance.", link=False)
            elif scope["type"] == "http" and scope["path"] == CALLBACK_PATH:
                response = await self.callback(request)
            else:
                response = await self.check(request)
            if response is None:
                return await app(scope, receive, send)
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            await response.asgi_send(send)

        return gate

    async def check(self, request: Request) -> Response | None:
        """None when every credential the request carries names a current member; else the answer to send."""
        actor_from_cookie = cookie_actor(self.datasette, request)
        authorization = request.headers.get("authorization", "")
        actor_from_token = None
        if authorization[:7].lower() == "bearer ":
            try:
                actor_from_token = await self.datasette.verify_token(authorization[7:].strip())
            except TokenInvalid as error:
                return json_error(401, "invalid_token", error.message)
            if actor_from_token is None:
                return json_error(401, "invalid_token", "This token is not one of this instance's API tokens.")
        credentials = [(actor, standing_key(actor)) for actor in (actor_from_cookie, actor_from_token) if actor]
        if not credentials or any(key is None for _, key in credentials):
            return self.sign_in(request) if wants_page(request) else json_error(
                401, "not_signed_in", f"Sign in at {self.settings.team_url}, or send a member's API token.")
        for actor, key in credentials:
            try:
                standing = await self.standing(key, actor["id"])
            except ControlPlaneUnavailable as error:
                log(f"{error}: refusing the request (fail closed)")
                return refusal(request, 503, "This instance cannot reach the control plane to check your access, "
                                             "so it refuses every request for now. Try again in a minute.")
            if standing.role is not None:
                continue
            if key[0] == "user":
                return json_error(403, "not_a_member", "The user of this API token is no longer a member of the team.")
            response = self.sign_in(request) if wants_page(request) else json_error(
                401, "session_ended", "Your sign-in ended; sign in again.")
            self.datasette.delete_actor_cookie(response)
            return response
        return None

    def sign_in(self, request: Request) -> Response:
        """302 to the control plane's authorize endpoint; the state, verifier and way back in a signed cookie."""
        state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        query = request.scope.get("query_string") or b""
        back = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        parameters = urllib.parse.urlencode({
            "team": self.settings.team_id, "redirect_uri": self.settings.redirect_uri, "state": state,
            "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"})
        separator = "&" if "?" in self.settings.authorize_url else "?"
        response = Response.redirect(self.settings.authorize_url + separator + parameters,
                                     headers={"Cache-Control": "no-store"})
        saved = {"state": state, "verifier": verifier, "next": local_path(back), "at": int(time.time())}
        response.set_cookie(STATE_COOKIE, self.datasette.sign(saved, STATE_NAMESPACE), max_age=STATE_LIFETIME_SECONDS,
                            path=STATE_COOKIE_PATH, httponly=True, samesite="lax",
                            secure=self.settings.secure_cookies)
        return response

    def saved_state(self, request: Request) -> dict | None:
        try:
            saved = self.datasette.unsign(request.cookies.get(STATE_COOKIE, ""), STATE_NAMESPACE)
        except BadSignature:
            return None
        fresh = isinstance(saved, dict) and isinstance(saved.get("at"), int) \
            and 0 <= time.time() - saved["at"] <= STATE_LIFETIME_SECONDS
        return saved if fresh and all(isinstance(saved.get(name), str) for name in ("state", "verifier", "next")) \
            else None

    async def callback(self, request: Request) -> Response:
        code, state = request.args.get("code", ""), request.args.get("state", "")
        # The server's access log writes the request line from this same scope when the response starts: without
        # the query, the code never reaches a log.
        request.scope["query_string"] = b""
        response = await self.complete_sign_in(request, code, state)
        response.set_cookie(STATE_COOKIE, "", max_age=0, expires=0, path=STATE_COOKIE_PATH, httponly=True,
                            samesite="lax", secure=self.settings.secure_cookies)
        return response

    async def complete_sign_in(self, request: Request, code: str, state: str) -> Response:
        if request.method not in ("GET", "HEAD"):
            return refusal(request, 405, "The sign-in callback accepts only GET.")
        if not code or not state or len(code) > MAX_CODE_LENGTH or len(state) > MAX_CODE_LENGTH:
            return refusal(request, 400, "This sign-in link is incomplete.")
        saved = self.saved_state(request)
        if saved is None:
            return refusal(request, 400, "This sign-in expired or was started in another browser.")
        if not hmac.compare_digest(state.encode(), saved["state"].encode()):
            return refusal(request, 400, "This sign-in does not match the one this browser started.")
        try:
            answer = await self.post(TOKEN_PATH, {"code": code, "code_verifier": saved["verifier"],
                                                  "redirect_uri": self.settings.redirect_uri})
        except ControlPlaneUnavailable as error:
            log(f"redeeming a sign-in failed: {error}")
            return refusal(request, 503, "This instance cannot reach the control plane to finish signing you in.")
        body = _json(answer)
        if answer.status_code != 200:
            reason = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            log(f"the control plane refused a sign-in ({answer.status_code}: {str(reason)[:200]})")
            status = 503 if answer.status_code >= 500 else 403
            return refusal(request, status, "The control plane refused this sign-in.")
        actor = body.get("actor") if isinstance(body, dict) else None
        session = body.get("session") if isinstance(body, dict) else None
        if not (isinstance(actor, dict) and isinstance(session, str) and session and isinstance(actor.get("id"), str)
                and isinstance(actor.get("email"), str) and actor.get("role") in ROLE_ACTIONS):
            log("the control plane's sign-in answer is malformed")
            return refusal(request, 502, "The control plane's answer to this sign-in was not understood.")
        self.remember(("session", session), actor["role"], self.interval(body))
        response = Response.redirect(local_path(saved["next"]), headers={"Cache-Control": "no-store"})
        # Datasette's own cookie and signature (its `actor_from_request` reads it), but not through its
        # set_actor_cookie, which sets neither HttpOnly nor Secure: script on the team's pages must not read the
        # sign-in, and over https it never travels in clear. Host-only (no Domain), as every cookie here.
        response.set_cookie("ds_actor", self.datasette.sign({"a": {"id": actor["id"], "email": actor["email"],
                                                                   "sso": session}}, "actor"),
                            httponly=True, samesite="lax", secure=self.settings.secure_cookies)
        return response


def _json(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return None


def wants_page(request: Request) -> bool:
    """A browser navigating: GET or HEAD, not a .json URL, not asking for JSON alone."""
    accept = request.headers.get("accept", "")
    asks_json_only = "application/json" in accept and "text/html" not in accept
    # scope.get: a websocket's scope has no method (it is refused, never redirected).
    return (request.scope.get("method") in ("GET", "HEAD") and not request.scope["path"].endswith(".json")
            and not asks_json_only)


def json_error(status: int, error: str, description: str) -> Response:
    return Response.json({"ok": False, "error": error, "errors": [description]}, status=status,
                         headers={"Cache-Control": "no-store"})


def refusal(request: Request, status: int, message: str, *, link: bool = True) -> Response:
    """A short page (or JSON for API clients) saying what went wrong, with a way to sign in again."""
    if not wants_page(request) and request.scope["path"] != CALLBACK_PATH:
        return json_error(status, "unavailable" if status >= 500 else "refused", message)
    again = '<p><a href="/">Sign in again</a></p>' if link else ""
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Sign-in</title></head><body>"
            f"<h1>{status}</h1><p>{html.escape(message)}</p>{again}</body></html>")
    return Response.html(page, status=status, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


_team_auths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def team_auth(datasette) -> TeamAuth:
    if datasette not in _team_auths:
        _team_auths[datasette] = TeamAuth(datasette, Settings.from_environ(os.environ),
                                          os.environ.get("CLOUDCTL_HEALTH_CHECK_PATH", "") or "/-/versions.json")
    return _team_auths[datasette]


def router_guard():
    """router_guard.py beside this file (a module of a plugins directory cannot be imported by its name)."""
    spec = importlib.util.spec_from_file_location("cloudctl_router_guard", Path(__file__).with_name("router_guard.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@hookimpl(trylast=True)
def asgi_wrapper(datasette):
    # trylast: wrappers apply in call order, so the last one called is the outermost; every other plugin's
    # middleware (a customer's included) sees only requests the gate let through. Outside the gate, the router
    # guard, when routed: a request the router did not send is refused before anything else looks at it.
    gate = team_auth(datasette).wrap
    guard = router_guard().wrapper_from_environ(os.environ)
    if guard is None:
        return gate
    return lambda app: guard(gate(app))


@hookimpl
def startup(datasette):
    # The client (its TLS context) is made before the first request, not during it: the first request after a
    # restart or a wake already waits for a revalidation.
    auth = team_auth(datasette)
    if auth.settings is not None:
        auth.client  # noqa: B018 (made for its side effect)


@hookimpl
def permission_resources_sql(datasette, actor, action):
    if action not in GOVERNED_ACTIONS:
        return None
    if action in HEALTH_CHECK_ACTIONS and serving_health_check.get():
        return HEALTH_CHECK_RULE
    role = team_auth(datasette).role(actor)
    if role is None:
        # Under --default-deny (as the entrypoint serves) nothing allows an action no rule names, and with no rule
        # at all Datasette decides without a query: Datasette asks this for the anonymous actor on every page (is
        # the resource private?). Without it, the deny is what beats Datasette's default allow of viewer actions.
        return None if datasette.default_deny else NO_ROLE_RULE
    if action in ROLE_ACTIONS[role]:
        return ROLE_RULES[role]
    # Not the role's: nothing else allows it (Datasette's defaults allow only viewer actions, and none under
    # --default-deny; datasette.yaml grants nothing), so it is denied without adding a rule to every check.
    return None
