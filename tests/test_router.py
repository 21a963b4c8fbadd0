"""The router (router/): the routing decision, its table, the pages it serves itself, the Fly replay, the wake,
and the instance's guard (instance/plugins/router_guard.py). In-process; the real processes are in
tests/test_router_stack.py."""

from __future__ import annotations

import asyncio
import logging
import sys

import httpx
import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from router.decision import (
    Failed, NotFound, Route, SettingUp, Suspended, TeamEntry, control_plane_cookie_present, decide, team_slug,
)
from router.proxy import Router
from router.services import wake_instance
from router.table import ABSENT, RoutingTable, read_entry
from instances.models import Instance, TeamAction
from teams.models import Team
from teams.routing import routing_secret
from instances.supervision import supervise

from .routing import REPO, Upstream

sys.path.insert(0, str(REPO / "instance" / "plugins"))
import router_guard  # noqa: E402

DOMAIN = "teams.example.com"
LOCAL = "instances.backends.local.LocalBackend"


# --- the decision ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("host, slug", [
    ("acme.teams.example.com", "acme"),
    ("ACME.Teams.Example.COM", "acme"),                 # mixed case
    ("acme.teams.example.com.", "acme"),                # one trailing dot
    ("acme.teams.example.com:443", "acme"),             # a port
    ("acme.teams.example.com.:8080", "acme"),
    (b"acme.teams.example.com", "acme"),
    ("acme.teams.example.com..", None),                 # two dots
    ("a.acme.teams.example.com", None),                 # a deeper name
    ("teams.example.com", None),                        # the domain itself
    ("acme.teams.example.com.evil.com", None),
    ("acme.teams.example.com@beta.teams.example.com", None),
    ("evilteams.example.com", None),
    ("acme", None),
    ("127.0.0.1:8080", None),
    ("[::1]:8080", None),
    ("acme.teams.example.com:", None),                  # an empty port
    ("acme.teams.example.com:http", None),
    ("acme.teams.example.com:0", None),
    ("acme.teams.example.com:99999", None),
    ("\u0430cme.teams.example.com", None),              # Cyrillic a: an IDN look-alike
    ("xn--cme-8cd.teams.example.com", None),            # its punycode
    ("xn--acme.teams.example.com", None),
    (b"acme.teams.example.com\xff", None),              # not ASCII
    (" acme.teams.example.com", None),
    ("acme.teams.example.com\t", None),
    ("-acme.teams.example.com", None),
    ("acme_.teams.example.com", None),
    ("", None),
    (None, None),
])
def test_a_host_names_a_team_only_in_its_one_form(host, slug):
    assert team_slug(host, DOMAIN) == slug


def entry(**fields) -> TeamEntry:
    base = dict(team_id=7, slug="acme", active=True, instance_state="running",
                upstream="http://127.0.0.1:9/")
    return TeamEntry(**{**base, **fields})


@pytest.mark.parametrize("fields, expected", [
    ({"active": False}, Suspended("acme")),
    ({"active": False, "instance_state": "stopped"}, Suspended("acme")),
    ({"instance_state": None, "upstream": ""}, SettingUp("acme")),
    ({"instance_state": "pending", "upstream": ""}, SettingUp("acme")),
    ({"instance_state": "provisioning", "upstream": ""}, SettingUp("acme")),
    ({"instance_state": "failed"}, Failed("acme")),
    ({"instance_state": "destroyed", "upstream": ""}, NotFound()),
    ({"instance_state": "destroying"}, NotFound()),
])
def test_each_state_has_its_decision(fields, expected):
    assert decide("acme.teams.example.com", DOMAIN, lambda slug: entry(**fields)) == expected


@pytest.mark.parametrize("state", ["running", "stopped", "provisioning", "pending"])
def test_a_team_that_answered_once_is_routed_while_it_starts_again(state, settings):
    route = decide("acme.teams.example.com", DOMAIN, lambda slug: entry(instance_state=state))
    assert isinstance(route, Route)
    assert (route.hostname, route.upstream) == ("acme.teams.example.com", "http://127.0.0.1:9/")
    assert route.secret == routing_secret(7)
    assert route.secret not in repr(route)


def test_an_unknown_name_is_not_found_without_reading_anything():
    def lookup(slug):
        raise AssertionError("a name that names no team is never looked up")

    assert decide("evil.example.org", DOMAIN, lookup) == NotFound()
    assert decide("acme.teams.example.com", DOMAIN, lambda slug: None) == NotFound()


def test_the_routing_secret_is_per_team(settings):
    assert routing_secret(7) != routing_secret(8)
    assert all(char in "0123456789abcdef" for char in routing_secret(7))


def test_the_secret_depends_on_the_key(settings):
    first = routing_secret(7)
    settings.ROUTER_KEY = "another-key"
    assert routing_secret(7) != first


@pytest.mark.parametrize("header, present", [
    ("sessionid=abc", True), ("ds_actor=x; csrftoken=y", True), ("ds_actor=x; ds_csrftoken=y", False),
    ("", False), ("mysessionid=1", False),
])
def test_control_plane_cookies_are_recognised(header, present):
    assert control_plane_cookie_present(header, frozenset({"sessionid", "csrftoken", "messages"})) is present


# --- the table ------------------------------------------------------------------------------------------

def test_the_table_reads_each_team_and_its_instance(make_team):
    team = make_team("acme")
    assert read_entry("acme") == TeamEntry(team_id=team.pk, slug="acme", active=True)
    instance = Instance.objects.create(team=team, backend=LOCAL, state=Instance.State.RUNNING,
                                       url="http://127.0.0.1:9/",
                                       resources={"port": 9, "url": "http://127.0.0.1:9/", "pid": 1})
    assert read_entry("acme").upstream == "http://127.0.0.1:9/" and not read_entry("acme").asleep
    Instance.objects.filter(pk=instance.pk).update(scaled_to_zero_at=timezone.now(), backups_expected_since=None)
    assert read_entry("acme").asleep
    Instance.objects.filter(pk=instance.pk).update(state=Instance.State.STOPPED, scaled_to_zero_at=None)
    assert read_entry("acme").asleep
    fly = make_team("flyer")
    Instance.objects.create(team=fly, backend="instances.backends.fly.FlyBackend", state=Instance.State.RUNNING,
                            resources={"app": "cloudctl-team-9", "machine": "3d8d9e5b1e7e89"})
    assert (read_entry("flyer").app, read_entry("flyer").machine, read_entry("flyer").upstream) == (
        "cloudctl-team-9", "3d8d9e5b1e7e89", "")
    assert read_entry("nobody") is None


def test_a_committed_change_is_seen_within_the_tables_bound(make_team, settings):
    """The bound is the promise (1 s); the clock is moved, not waited for."""
    assert settings.ROUTER_TABLE_MAX_AGE <= 1
    now = [1000.0]
    table = RoutingTable(clock=lambda: now[0])
    team = make_team("acme")
    assert table.lookup("acme").active
    Team.objects.filter(pk=team.pk).update(status=Team.Status.DISABLED)
    now[0] += table.max_age * 0.9
    assert table.lookup("acme").active  # served from memory inside the bound
    now[0] += table.max_age * 0.1
    assert not table.lookup("acme").active
    assert decide("acme.teams.example.com", DOMAIN, table.lookup) == Suspended("acme")
    Team.objects.filter(pk=team.pk).delete()
    now[0] += table.max_age
    assert decide("acme.teams.example.com", DOMAIN, table.lookup) == NotFound()
    make_team("newcomer")
    assert table.lookup("newcomer") is not None  # never looked up before: read at once


def test_names_nobody_has_do_not_grow_the_table_without_bound():
    """Anyone can ask for any name under the domain: the table remembers at most `max_entries`, the oldest
    reads going first, so random names cost the router no memory beyond that."""
    now = [1000.0]
    table = RoutingTable(read=lambda slug: None, clock=lambda: now[0], max_entries=100)
    for number in range(10_000):
        table.lookup(f"nobody-{number}")
    assert table.remembered() == 100
    assert table.cached("nobody-9999") is None and table.cached("nobody-0") is ABSENT


# --- the pages and the Fly replay (the ASGI app in process) ----------------------------------------------

def router_client(entries: dict[str, TeamEntry], *, mode: str, woken: list | None = None) -> httpx.AsyncClient:
    table = RoutingTable(read=entries.get)
    app = Router(mode=mode, table=table, wake=(woken.append if woken is not None else lambda team_id: None))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router")


async def get(client, host: str, path: str = "/", **kwargs):
    return await client.request(kwargs.pop("method", "GET"), path, headers={"Host": host, **kwargs.pop("headers", {})},
                                **kwargs)


@pytest.fixture
def teams_domain(settings):
    settings.TEAMS_DOMAIN = DOMAIN
    settings.ROUTER_WAKE_TIMEOUT = 0.3


@pytest.mark.parametrize("mode", ["embedded", "fly"])
@pytest.mark.anyio
async def test_the_router_serves_its_own_pages(mode, teams_domain):
    entries = {"off": entry(slug="off", active=False), "new": entry(slug="new", instance_state="provisioning",
                                                                     upstream=""),
               "broken": entry(slug="broken", instance_state="failed")}
    async with router_client(entries, mode=mode) as client:
        missing = await get(client, "nobody.teams.example.com")
        off = await get(client, "off.teams.example.com")
        new = await get(client, "new.teams.example.com")
        broken = await get(client, "broken.teams.example.com")
        elsewhere = await get(client, "example.org")
    assert missing.status_code == 404 and "No such space" in missing.text
    assert elsewhere.status_code == 404
    assert off.status_code == 403 and "suspended" in off.text
    assert new.status_code == 503 and "being set up" in new.text and new.headers["refresh"] == "5"
    assert broken.status_code == 503 and "request id" in broken.text
    request_id = broken.text.split("<code>")[1].split("</code>")[0]
    assert len(request_id) == 16
    for page in (missing, off, new, broken):
        assert page.headers["content-type"].startswith("text/html") and page.headers["cache-control"] == "no-store"


@pytest.mark.anyio
async def test_the_fly_router_answers_a_replay_to_the_teams_machine(teams_domain, settings):
    entries = {"acme": entry(upstream="", app="cloudctl-team-7", machine="3d8d9e5b1e7e89")}
    async with router_client(entries, mode="fly") as client:
        plain = await get(client, "acme.teams.example.com", "/data?sql=select+1")
        with_cookie = await get(client, "acme.teams.example.com", headers={"Cookie": "sessionid=s3cr3t; ds_actor=a"})
        small_post = await get(client, "acme.teams.example.com", "/data/-/create", method="POST", content=b"x" * 1000)
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/vnd.fly.replay+json"
    assert plain.json() == {"app": "cloudctl-team-7", "instance": "3d8d9e5b1e7e89", "state": routing_secret(7),
                            "timeout": f"{int(settings.ROUTER_WAKE_TIMEOUT)}s", "fallback": "force_self"}
    assert with_cookie.json()["transform"] == {"delete_headers": ["cookie"]}
    assert small_post.headers["content-type"] == "application/vnd.fly.replay+json"


@pytest.mark.anyio
async def test_a_failed_replay_gets_the_waking_page(teams_domain):
    async with router_client({"acme": entry(app="a", machine="m")}, mode="fly") as client:
        page = await get(client, "acme.teams.example.com", headers={
            "fly-replay-failed": "instance=m;app=a;region=ord;reason=timeout;elapsed_ms=10000"})
    assert page.status_code == 503 and page.headers["retry-after"] == "5" and "waking up" in page.text


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.mark.anyio
async def test_the_fly_router_carries_a_large_body_itself(teams_domain, settings, upstream):
    """Fly replays at most 1 MB: a larger body, or one of unknown length, goes to the Machine's private address
    through the router, with the state Fly would have set."""
    settings.ROUTER_FLY_UPSTREAM = f"http://127.0.0.1:{upstream.port}/{{app}}/{{machine}}"
    entries = {"acme": entry(upstream="", app="cloudctl-team-7", machine="m1")}

    async def chunks():
        for _ in range(3):
            yield b"y" * 100_000

    async with router_client(entries, mode="fly") as client:
        large = await get(client, "acme.teams.example.com", "/data/-/upload", method="POST",
                          content=b"x" * (settings.ROUTER_REPLAY_MAX_BODY + 1))
        chunked = await get(client, "acme.teams.example.com", "/data/-/upload", method="POST", content=chunks())
    assert large.json() == {"length": settings.ROUTER_REPLAY_MAX_BODY + 1}
    assert chunked.json() == {"length": 300_000}
    first = upstream.requests[0]
    assert first["path"] == "/cloudctl-team-7/m1/data/-/upload"
    headers = dict((name.lower(), value) for name, value in first["headers"])
    assert headers["host"] == "acme.teams.example.com"
    assert router_guard.replay_state(headers["fly-replay-src"]) == routing_secret(7)


@pytest.mark.anyio
async def test_the_embedded_router_sends_its_own_headers_only(teams_domain, upstream):
    entries = {"acme": entry(upstream=upstream.url)}
    async with router_client(entries, mode="embedded") as client:
        answer = await get(client, "ACME.teams.example.com.:8080", "/data?x=1", headers={
            "fly-replay-src": "state=forged", "X-Forwarded-Host": "beta.teams.example.com",
            "Cookie": "ds_actor=a; sessionid=control-plane", "Accept": "text/html"})
    assert answer.status_code == 200
    [request] = upstream.requests
    headers = [(name.lower(), value) for name, value in request["headers"]]
    assert request["path"] == "/data?x=1"
    assert [value for name, value in headers if name == "host"] == ["acme.teams.example.com"]
    sources = [value for name, value in headers if name == "fly-replay-src"]
    assert len(sources) == 1 and router_guard.replay_state(sources[0]) == routing_secret(7)
    assert "x-forwarded-host" not in dict(headers) and "cookie" not in dict(headers)
    assert dict(headers)["accept"] == "text/html"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["embedded", "fly"])
async def test_a_cookie_any_team_can_toss_costs_no_team_its_own_cookies(teams_domain, upstream, mode):
    """A team's page can set cookies on the parent domain it shares with the control plane and every other team
    (tests/test_sso_hostile.py tosses them). The router drops the Cookie header for the control plane's credentials
    only (session, CSRF): were a tossable name (Django's `messages`) enough, one team could strip every other team's
    sign-in from that browser's requests."""
    entries = {"acme": entry(upstream=upstream.url, app="cloudctl-team-7", machine="m1")}
    async with router_client(entries, mode=mode) as client:
        answer = await get(client, "acme.teams.example.com", headers={"Cookie": "ds_actor=a; messages=tossed"})
    if mode == "fly":
        assert "transform" not in answer.json()
    else:
        [request] = upstream.requests
        assert dict((name.lower(), value) for name, value in request["headers"])["cookie"] == (
            "ds_actor=a; messages=tossed")


@pytest.mark.anyio
async def test_the_embedded_router_wakes_an_asleep_instance_and_says_so_when_it_does_not_come(teams_domain):
    woken = []
    async with router_client({"acme": entry(upstream="http://127.0.0.1:1/", asleep=True)}, mode="embedded",
                             woken=woken) as client:
        page = await get(client, "acme.teams.example.com")
    assert woken == [7]  # once per request, however many retries
    assert page.status_code == 503 and page.headers["retry-after"] == "5" and "waking up" in page.text


# --- the wake ---------------------------------------------------------------------------------------------

def queued_actions() -> list:
    """The team actions queued for the worker (the database task queue), none run."""
    return [task.args_kwargs["args"][0] for task in DBTaskResult.objects.filter(task_path__endswith="run_team_action")]


def test_the_wake_queues_one_start_for_an_asleep_instance(make_team, django_capture_on_commit_callbacks):
    team = make_team("acme")
    instance = Instance.objects.create(team=team, backend=LOCAL, state=Instance.State.STOPPED,
                                       desired_state=Instance.State.STOPPED)
    with django_capture_on_commit_callbacks(execute=True):
        action = wake_instance(team.pk)
    assert action.kind == TeamAction.Kind.START and action.requested_by == "router"
    assert queued_actions() == [action.pk]
    assert wake_instance(team.pk) is None  # one is queued already
    TeamAction.objects.update(status=TeamAction.Status.SUCCEEDED)
    Instance.objects.filter(pk=instance.pk).update(state=Instance.State.RUNNING, scaled_to_zero_at=timezone.now(),
                                                   backups_expected_since=None)
    assert wake_instance(team.pk).kind == TeamAction.Kind.START  # scaled to zero


@pytest.mark.parametrize("state", ["running", "provisioning", "failed", "destroyed"])
def test_the_wake_leaves_an_instance_that_is_not_asleep(make_team, state):
    team = make_team("acme")
    Instance.objects.create(team=team, backend=LOCAL, state=state)
    assert wake_instance(team.pk) is None
    assert not TeamAction.objects.exists()


def test_the_wake_never_starts_a_suspended_team(make_team):
    team = make_team("acme", status=Team.Status.DISABLED)
    Instance.objects.create(team=team, backend=LOCAL, state=Instance.State.STOPPED)
    assert wake_instance(team.pk) is None
    assert wake_instance(team.pk + 1000) is None


def test_supervision_leaves_an_instance_that_scaled_to_zero_for_the_router_to_wake(make_team, settings, tmp_path):
    settings.LOCAL_INSTANCES_DIR = tmp_path
    team = make_team("acme")
    instance = Instance.objects.create(team=team, backend=LOCAL, state=Instance.State.RUNNING,
                                       completed_steps=["volume", "machine", "healthy"])
    (tmp_path / f"team-{team.pk}").mkdir()  # its volume, no process: it exited
    Instance.objects.filter(pk=instance.pk).update(scaled_to_zero_at=timezone.now(), backups_expected_since=None)
    assert supervise(LOCAL, actor="test") == []
    # Booted again since (a heartbeat was due): an exit now is a crash or a stop to restart.
    Instance.objects.filter(pk=instance.pk).update(backups_expected_since=timezone.now())
    assert supervise(LOCAL, actor="test") == ["acme: stopped, restart queued"]


# --- the instance's guard ---------------------------------------------------------------------------------

SECRET = routing_secret(7)


async def inner(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"team data"})


def guarded_client():
    app = router_guard.guard(inner, secret=SECRET, hostname="acme.teams.example.com", health_path="/-/versions.json")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://instance")


@pytest.mark.parametrize("headers, served", [
    ([("host", "acme.teams.example.com"), ("fly-replay-src", f"instance=r;region=ord;t=1;state={SECRET}")], True),
    ([("host", "acme.teams.example.com"), ("fly-replay-src", f"instance=r,state={SECRET}")], True),  # `,` form
    ([("host", "ACME.teams.example.com.:443"), ("fly-replay-src", f"state={SECRET}")], True),
    ([("host", "acme.teams.example.com")], False),                                            # no header
    ([("host", "acme.teams.example.com"), ("fly-replay-src", "state=forged")], False),
    ([("host", "acme.teams.example.com"), ("fly-replay-src", f"state={routing_secret(8)}")], False),  # another team
    ([("host", "acme.teams.example.com"), ("fly-replay-src", f"state={SECRET};state=x")], False),
    ([("host", "acme.teams.example.com"), ("fly-replay-src", f"state={SECRET}"),
      ("fly-replay-src", "state=x")], False),
    ([("host", "acme.teams.example.com"), ("fly-replay-src", f"state={SECRET[:-1]}")], False),
    ([("host", "acme.teams.example.com"), ("fly-replay-src", f"xstate={SECRET}")], False),
    ([("host", "beta.teams.example.com"), ("fly-replay-src", f"state={SECRET}")], False),      # another name
    ([("host", "acme.teams.example.com.evil"), ("fly-replay-src", f"state={SECRET}")], False),
    ([("host", "127.0.0.1:8080"), ("fly-replay-src", f"state={SECRET}")], False),
])
@pytest.mark.anyio
async def test_the_instance_serves_only_its_own_router(headers, served):
    async with guarded_client() as client:
        request = client.build_request("GET", "/data")
        request.headers = httpx.Headers(headers)
        answer = await client.send(request)
    assert (answer.status_code, answer.text == "team data") == ((200, True) if served else (403, False))


@pytest.mark.anyio
async def test_only_the_health_check_path_is_open(tmp_path):
    async with guarded_client() as client:
        health = await client.get("/-/versions.json", headers={"Host": "127.0.0.1"})
        head = await client.head("/-/versions.json")
        post = await client.post("/-/versions.json")
        other = await client.get("/-/versions.json/../data")
        nearby = await client.get("/-/versions.json2")
    assert (health.status_code, head.status_code) == (200, 200)
    assert (post.status_code, other.status_code, nearby.status_code) == (403, 403, 403)


@pytest.mark.anyio
async def test_the_routers_own_health_check_is_no_teams_path(teams_domain, upstream):
    async with router_client({"acme": entry(upstream=upstream.url)}, mode="embedded") as client:
        own = await get(client, "10.0.0.7:8080", "/healthz")
        team = await get(client, "acme.teams.example.com", "/healthz")
    assert (own.status_code, own.text) == (200, "ok\n")
    assert team.status_code == 200 and team.json() == {"length": 0}  # the team's own path, forwarded
    assert [request["path"] for request in upstream.requests] == ["/healthz"]


@pytest.mark.parametrize("name, value, check_id", [
    ("ROUTER_TABLE_MAX_AGE", 1.5, "router.E001"), ("ROUTER_TABLE_MAX_AGE", 0, "router.E001"),
    ("ROUTER_REPLAY_MAX_BODY", 2_000_000, "router.E002"), ("ROUTER_WAKE_TIMEOUT", 0, "router.E003"),
    ("SESSION_COOKIE_DOMAIN", ".example.com", "router.W001"),
])
def test_router_settings_are_checked(settings, name, value, check_id):
    from router.checks import router_settings

    assert router_settings(None) == []
    setattr(settings, name, value)
    assert [message.id for message in router_settings(None)] == [check_id]


@pytest.mark.anyio
@pytest.mark.parametrize("mode, fields", [("embedded", {"upstream": "", "app": "a", "machine": "m"}),
                                          ("fly", {"upstream": "http://127.0.0.1:9/"})])
async def test_a_team_the_executor_cannot_reach_gets_a_page_not_an_error(teams_domain, mode, fields):
    async with router_client({"acme": entry(**fields)}, mode=mode) as client:
        page = await get(client, "acme.teams.example.com")
    assert page.status_code == 502 and "did not answer" in page.text


def test_a_token_rotation_leaves_the_routing_secret_alone(make_team):
    """A rotation restarts the instance through the worker: until then the running instance has the secret it
    started with, and the router must keep sending that one (else its requests get 403 for the rotation's gap)."""
    from teams.tokens import rotate_team_token

    team = make_team("acme")
    Instance.objects.create(team=team, backend=LOCAL, state=Instance.State.RUNNING,
                            resources={"port": 9, "url": "http://127.0.0.1:9/"})
    before = read_entry("acme")
    rotate_team_token(team)
    after = read_entry("acme")
    route = decide("acme.teams.example.com", DOMAIN, lambda slug: after)
    assert route.secret == decide("acme.teams.example.com", DOMAIN, lambda slug: before).secret


@pytest.mark.django_db(transaction=True)
def test_the_routing_secret_is_never_stored_or_logged(make_team, upstream, caplog, settings):
    import asyncio

    from instances.specs import build_spec

    from .test_secrets_never_stored import database_text

    caplog.set_level(logging.DEBUG)
    settings.TEAMS_DOMAIN = DOMAIN
    team, broken = make_team("acme"), make_team("broken")
    instance = Instance.objects.create(team=team, backend=LOCAL, state=Instance.State.RUNNING, url=upstream.url,
                                       resources={"port": upstream.port, "url": upstream.url})
    Instance.objects.create(team=broken, backend=LOCAL, state=Instance.State.FAILED)
    secret = build_spec(instance).secrets["CLOUDCTL_ROUTING_SECRET"]

    async def visit():
        app = Router(mode="embedded", wake=lambda team_id: None)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as client:
            served = await get(client, "acme.teams.example.com", "/data")
            failed = await get(client, "broken.teams.example.com")
        return served, failed

    served, failed = asyncio.run(visit())
    assert (served.status_code, failed.status_code) == (200, 503)
    assert secret == routing_secret(team.pk)
    assert secret not in database_text() and secret not in caplog.text
    assert secret not in served.text + failed.text + str(served.headers) + str(failed.headers)


# --- the router's hot path ------------------------------------------------------------------------------

class RecordingTransport:
    def __init__(self):
        self.sent, self.closed = [], False

    def write(self, data):
        self.sent.append(data)

    def is_closing(self):
        return self.closed

    def get_write_buffer_size(self):
        return 0  # all sent

    def close(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


@pytest.mark.anyio
async def test_the_routers_server_sends_what_one_turn_writes_at_once():
    """uvicorn writes the headers, the body and a chunked answer's end apart: one send for them all."""
    from router.server import CoalescingTransport

    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.writelines([b"5\r\nhello\r\n", b"0\r\n\r\n"])
    assert real.sent == [] and transport.get_write_buffer_size() == 19 + 15
    await asyncio.sleep(0)
    assert real.sent == [b"HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]
    transport.write(b"last words")
    transport.close()  # nothing written is lost to a close in the same turn
    assert real.sent[-1] == b"last words" and real.closed
    await asyncio.sleep(0)
    assert len(real.sent) == 2
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5)


@pytest.mark.anyio
async def test_the_router_decides_anew_when_the_table_reads_a_new_entry(teams_domain):
    now = [1000.0]
    entries = {"acme": entry(upstream="http://127.0.0.1:1/")}
    router = Router(mode="embedded", table=RoutingTable(read=entries.get, clock=lambda: now[0]))
    first = await router._decide(b"acme.teams.example.com")
    assert first.upstream == "http://127.0.0.1:1/"
    assert await router._decide(b"ACME.teams.example.com:80") is first  # the same entry: the same decision
    entries["acme"] = entry(upstream="http://127.0.0.1:2/")
    now[0] += router.table.max_age
    assert (await router._decide(b"acme.teams.example.com")).upstream == "http://127.0.0.1:2/"
    entries["acme"] = entry(active=False)
    now[0] += router.table.max_age
    assert await router._decide(b"acme.teams.example.com") == Suspended("acme")
    del entries["acme"]
    now[0] += router.table.max_age
    assert await router._decide(b"acme.teams.example.com") == NotFound()
    assert await router._decide(b"nobody.example.org") == NotFound()
