"""Issue 14's acceptance: a hostile team instance gets nothing that works anywhere else.

Team A's instance is instrumented the way a customer could do it: a plugin dropped into its volume's `plugins/`
(loaded at start as every customer plugin is) records every request it receives, headers and cookies. A user signs
in at the control plane in real Chromium and uses team A; then everything A recorded is tried against the control
plane, the private API and team B, and A's page tosses cookies onto the parent domain the control plane and the
teams share (the production topology: tests/sso_stack.py). Every attempt must fail.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from django.test import Client

from members.models import Invitation
from teams.models import Membership, Team
from teams.tokens import team_token

from .instance_sso import actor_cookie, api_token, volume_secret
from .sso_stack import (  # noqa: F401 (the fixtures: production_cookie_settings, sso_browser, sso_stack...)
    PARENT_DOMAIN, RECORDER_PLUGIN, Pkce, authorize_query, callback_uri, control_plane_cookie_names,
    control_plane_leaks, forwarded_head, needs_chromium, new_page, production_cookie_settings, recorded_requests,
    sign_in, sso_browser, sso_stack, team_actor_email, tls_certificate, verified_user,
)
from .test_instance import needs_instance_venv
from .test_local_backend import local  # noqa: F401 (the fixture)
from .test_router_stack import queue_team, volume_data, wait_until_running

# Headers the replays leave out: they name the connection or the host, not the visitor.
NOT_REPLAYED = {"host", "content-length", "connection", "transfer-encoding", "x-forwarded-proto"}


def record(cookies: dict[str, str], headers: dict[str, str] | None = None, query: str = "") -> dict:
    cookie_header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return {"method": "GET", "path": "/", "query": query,
            "headers": [("host", "a.teams.example"), ("cookie", cookie_header), *(headers or {}).items()],
            "cookies": {name: [value] for name, value in cookies.items()}}


def test_the_leak_check_finds_a_control_plane_cookie_by_its_name_or_its_value_anywhere():
    names, values = {"__Host-sessionid", "csrftoken"}, {"s3cr3t-session-key-0123456789"}
    clean = record({"ds_actor": "signed-by-the-instance"})
    by_name = record({"ds_actor": "x", "csrftoken": "y"})
    renamed = record({"stolen": "s3cr3t-session-key-0123456789"})
    in_a_header = record({}, {"x-smuggled": "...s3cr3t-session-key-0123456789..."})
    in_the_query = record({}, query="next=s3cr3t-session-key-0123456789")
    assert control_plane_leaks([clean], names, values) == []
    assert control_plane_leaks([clean, by_name], names, values) == ["GET /: cookie csrftoken"]
    for leaked in (renamed, in_a_header, in_the_query):
        assert control_plane_leaks([leaked], names, values) == ["GET /: the value of a control-plane cookie"]


def test_the_tls_front_marks_a_request_https_and_closes_after_it():
    head = (b"POST /x HTTP/1.1\r\nHost: app.cloudctl.test:1\r\nConnection: keep-alive\r\n"
            b"X-Forwarded-Proto: http\r\nContent-Length: 3\r\n\r\n")
    assert forwarded_head(head) == (b"POST /x HTTP/1.1\r\nHost: app.cloudctl.test:1\r\nContent-Length: 3\r\n"
                                    b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")


# A page's script that submits a form of `fields` to `action` (a top-level POST navigation, as a link would).
POST_FORM = """([action, fields]) => { const form = document.createElement("form");
    form.method = "POST"; form.action = action;
    for (const [name, value] of Object.entries(fields)) { const field = document.createElement("input");
        field.type = "hidden"; field.name = name; field.value = value; form.appendChild(field); }
    document.body.appendChild(form); form.submit(); }"""


# A page's script: a row inserted through Datasette's JSON write API at `url` with the browser's cookies, as a
# "simple" request (text/plain: no preflight, so it is sent wherever it goes).
INSERT_ROW = """([url, rowId]) => fetch(url, {method: "POST", mode: "no-cors", credentials: "include",
    headers: {"Content-Type": "text/plain"}, body: JSON.stringify({row: {id: rowId}})}).then(() => true)"""


def team_rows(database: Path) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute("select id from marker order by id").fetchall()


def signed_out(answer: httpx.Response) -> bool:
    """The control plane's answer to someone it does not know: to its sign-in page."""
    return answer.status_code == 302 and "/login/" in answer.headers.get("location", "")


def cookie_header(jar: list[dict]) -> str:
    return "; ".join(f"{cookie['name']}={cookie['value']}" for cookie in jar)


def session_key_of(user, settings) -> str:
    """A real control-plane session of `user`: what an attacker signed in as themselves holds."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def toss(page, stack, slug: str, cookies: dict[str, str], *, page_text: str | None = None) -> list[str]:
    """From the team's page (once it shows `page_text`), `cookies` set on the parent domain the team shares with
    the control plane; the names the browser kept for the control plane's host."""
    page.goto(stack.team_url(slug))
    # The team's own page, loaded: a page still on its way there (the sign-in handoff, or an error page under load)
    # would set nothing, and the test would then prove nothing about what the browser keeps.
    if page_text:
        page.wait_for_selector(f"text={page_text}")
    assert page.url.startswith(stack.team_url(slug)), page.url
    page.evaluate("""([cookies, domain]) => { for (const [name, value] of Object.entries(cookies)) {
        document.cookie = `${name}=${value}; Domain=${domain}; Path=/`; } }""", [cookies, PARENT_DOMAIN])
    return sorted(cookie["name"] for cookie in page.context.cookies([stack.public_url])
                  if cookie["domain"] == f".{PARENT_DOMAIN}")


def my_teams(page, stack) -> set[str] | None:
    """The teams the control plane's "my teams" page lists for whoever the browser is there; None if signed out."""
    page.goto(stack.url("/teams/"))
    if not page.url.startswith(stack.url("/teams/")):
        return None
    links = page.eval_on_selector_all("#my-teams a[href^='/teams/']", "links => links.map(l => l.pathname)")
    return {link.strip("/").split("/")[1] for link in links}


def redeem(settings, team: Team, code: str, pkce: Pkce, redirect_uri: str) -> httpx.Response:
    return httpx.post(f"{settings.PRIVATE_API_URL}/private/v1/sso/token", timeout=30,
                      headers={"Authorization": f"Bearer {team_token(team)}"},
                      json={"code": code, "code_verifier": pkce.verifier, "redirect_uri": redirect_uri})


def issued_code(stack, cookie: str, team: Team, pkce: Pkce) -> str:
    """A code the control plane hands the signed-in browser whose cookies are `cookie`, for `team`."""
    with stack.control_plane(cookie=cookie) as control_plane:
        answer = control_plane.get("/sso/authorize", params=authorize_query(team, pkce))
    assert answer.status_code == 302, answer.text[:500]
    location = httpx.URL(answer.headers["location"])
    assert str(location.copy_with(query=None)) == callback_uri(team.slug)
    return location.params["code"]


@needs_instance_venv
@needs_chromium
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_hostile_instance_gets_nothing_that_works_anywhere_else(sso_stack, sso_browser, settings):  # noqa: F811
    stack = sso_stack
    hostile = queue_team("hostile", settings, marker=True, plugins={"recorder.py": RECORDER_PLUGIN})
    other = queue_team("other", settings, marker=True)
    alice, bob, mallory = verified_user("alice"), verified_user("bob"), verified_user("mallory")
    Membership.objects.create(team=hostile, user=alice, role=Membership.Role.OWNER)
    Membership.objects.create(team=other, user=bob, role=Membership.Role.OWNER)
    mallorys = Team.objects.create(slug="mallorys", name="Mallory's", region=settings.REGIONS[0])
    Membership.objects.create(team=mallorys, user=mallory, role=Membership.Role.OWNER)
    wait_until_running(hostile)
    wait_until_running(other)

    # Alice signs in at the control plane and uses her team: the handoff, a few of Datasette's pages, the control
    # plane again in between (its cookies fresh in the jar).
    page = new_page(sso_browser)
    sign_in(page, stack, "alice")
    page.goto(stack.team_url("hostile"))
    page.wait_for_selector("text=hostile_marker")
    assert page.url.startswith(stack.team_url("hostile"))
    page.goto(stack.team_url("hostile", "/hostile_marker/marker"))
    page.goto(stack.url("/teams/"))
    assert team_actor_email(page, stack, "hostile") == "alice@example.com"
    jar = page.context.cookies([stack.public_url])
    assert jar, "signing in left the control plane's cookies in the browser"
    alice_cookies = cookie_header(jar)
    names = control_plane_cookie_names(settings, jar)
    values = {cookie["value"] for cookie in jar if len(cookie["value"]) >= 16}
    print(f"\nthe control plane's cookie names checked: {sorted(names)}")

    # 1. Nothing of the control plane reached the instance. The recorder saw what the browser sends the team's
    # own host (its actor cookie), so it would have seen a control-plane cookie too.
    records = recorded_requests(volume_data(hostile, settings))
    actors = {value for entry in records for value in entry["cookies"].get("ds_actor", [])}
    assert actors, f"the recorder saw no ds_actor in {len(records)} requests"
    assert control_plane_leaks(records, names, values) == []

    # 2. Everything recorded, replayed at the control plane: the pages of signed-in people and the private API.
    replays = {tuple((name, value) for name, value in entry["headers"] if name.lower() not in NOT_REPLAYED)
               for entry in records}
    for headers in replays:
        with stack.control_plane() as control_plane:
            for path in ("/teams/", "/dashboard/", "/admin/"):
                answer = control_plane.get(path, headers=dict(headers))
                assert signed_out(answer), (path, headers, answer.status_code)
    recorded_values = {value for entry in records for _, value in entry["headers"]} | {
        value for entry in records for values_ in entry["cookies"].values() for value in values_}
    for value in sorted(recorded_values):
        answer = httpx.post(f"{settings.PRIVATE_API_URL}/private/v1/credentials", timeout=30,
                            headers={"Authorization": f"Bearer {value}"})
        assert answer.status_code in (400, 401, 403, 429) and "AccessKeyId" not in answer.text, value

    # 3. A's actor and A's code at team B, through the router: refused. The same actor works at A (it is valid).
    # So do what A forges with its own cookie secret (its volume's): an actor cookie, and a Datasette API token,
    # each naming Bob, B's owner.
    a_secret = volume_secret(volume_data(hostile, settings))
    forged_actor = actor_cookie(a_secret, user_id=str(bob.pk), grant="any-grant", email=bob.email)
    for actor in actors:
        with stack.team("hostile", cookie=f"ds_actor={actor}") as team_a:
            assert "hostile_marker" in team_a.get("/").text
    for cookie, headers in [*((f"ds_actor={actor}", {}) for actor in actors), (f"ds_actor={forged_actor}", {}),
                            (None, {"Authorization": f"Bearer {api_token(a_secret, str(bob.pk))}"})]:
        with stack.team("other", cookie=cookie) as team_b:
            for path in ("/", "/other_marker/marker.json", "/-/actor.json"):
                answer = team_b.get(path, headers=headers)
                assert answer.status_code in (302, 401, 403) and "other_marker" not in answer.text, (path, cookie)
                assert "alice" not in answer.text and "bob" not in answer.text, (path, cookie)
    callbacks = [entry for entry in records if entry["path"] == "/-/sso/callback"]
    assert callbacks, "the recorder saw the handoff's callback"
    for entry in callbacks:
        cookies = "; ".join(header for name, header in entry["headers"] if name.lower() == "cookie")
        # At B with the cookies A saw, and at A again from a browser that never started that sign-in.
        for slug, cookie in (("other", cookies), ("hostile", None)):
            with stack.team(slug, cookie=cookie) as team:
                answer = team.get(f"/-/sso/callback?{entry['query']}")
            assert "ds_actor=" not in "".join(answer.headers.get_list("set-cookie")), (slug, answer.headers)
            assert answer.status_code != 200 and "_marker" not in answer.text, slug
    # With its own token A learns nothing of B's members.
    answer = httpx.post(f"{settings.PRIVATE_API_URL}/private/v1/sso/actor", timeout=30, json={"user": str(bob.pk)},
                        headers={"Authorization": f"Bearer {team_token(hostile)}"})
    assert answer.status_code == 403 and "bob" not in answer.text, answer.text

    # 4. A code for A redeemed with B's token: refused, and burnt (A's own redemption then fails too). A fresh
    # code redeemed by A alone works: the refusals are not the test's own mistakes.
    pkce = Pkce.new()
    code = issued_code(stack, alice_cookies, hostile, pkce)
    stolen = redeem(settings, other, code, pkce, callback_uri(hostile.slug))
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant", stolen.text
    assert redeem(settings, hostile, code, pkce, callback_uri(hostile.slug)).status_code == 400
    fresh = Pkce.new()
    redeemed = redeem(settings, hostile, issued_code(stack, alice_cookies, hostile, fresh), fresh,
                      callback_uri(hostile.slug))
    assert redeemed.status_code == 200 and redeemed.json()["actor"]["email"] == "alice@example.com", redeemed.text

    # The authorize endpoint sends a code only to the team's own callback: no redirect elsewhere.
    for team, callback_of in ((hostile, other), (other, hostile)):
        query = {**authorize_query(team, Pkce.new()), "redirect_uri": callback_uri(callback_of.slug)}
        with stack.control_plane(cookie=alice_cookies) as control_plane:
            answer = control_plane.get("/sso/authorize", params=query)
        assert answer.status_code in (400, 403) and "location" not in answer.headers, (team.slug, answer.status_code)
        assert answer.status_code == 400 or team == other  # Alice is no member of B: either refusal is right

    # 5. Cookie tossing: A's page sets, on the parent domain, every control-plane cookie name (the session one to
    # Mallory's real session, the CSRF one to a token A knows) and ds_actor (A's). The browser keeps what it may
    # (ds_actor, at least: so B is sent it); Alice is still herself at the control plane.
    known_csrf = "t0ss3d" * 6
    tossed = {name: "tossed-by-a" for name in names}
    tossed.update({settings.SESSION_COOKIE_NAME: session_key_of(mallory, settings),
                   settings.CSRF_COOKIE_NAME: known_csrf, "ds_actor": sorted(actors)[0]})
    landed = toss(page, stack, "hostile", tossed, page_text="hostile_marker")
    print(f"\ntossed cookies the browser kept for the parent domain: {landed}")
    assert "ds_actor" in landed
    assert my_teams(page, stack) == {"hostile"}
    # ...and at her team: what A tossed locks her out of no team (A's own included).
    assert team_actor_email(page, stack, "hostile") == "alice@example.com"
    # B does not take the tossed actor: it sends Alice to sign in to B, where she is no member.
    answer = page.goto(stack.team_url("other"))
    assert page.url.startswith(stack.url("/sso/authorize")) and answer.status == 403, (page.url, answer.status)
    assert "other_marker" not in page.content()

    # 6. A cross-origin POST from A's page to the control plane, with the tossed CSRF token: refused (the Origin
    # check), and Alice is still signed in.
    page.goto(stack.team_url("hostile"))
    with page.expect_navigation() as navigation:
        page.evaluate(POST_FORM, [stack.url("/accounts/logout/"), {"csrfmiddlewaretoken": known_csrf}])
    assert navigation.value.status == 403
    # The same at the members' page and JSON endpoints: an invitation for the attacker, as a form (the tossed token
    # in it) and as a simple fetch (no preflight: JSON sent as text/plain).
    page.goto(stack.team_url("hostile"))
    with page.expect_navigation() as navigation:
        page.evaluate(POST_FORM, [stack.url("/teams/hostile/invitations/"),
                                  {"csrfmiddlewaretoken": known_csrf, "email": "attacker@example.com",
                                   "role": "admin"}])
    assert navigation.value.status == 403
    page.goto(stack.team_url("hostile"))
    page.evaluate("""([url, token]) => fetch(url, {method: "POST", mode: "no-cors", credentials: "include",
        body: JSON.stringify({email: "attacker@example.com", role: "admin", csrfmiddlewaretoken: token})})""",
                  [stack.url("/api/teams/hostile/invitations"), known_csrf])
    assert not Invitation.objects.filter(email="attacker@example.com").exists()
    assert my_teams(page, stack) == {"hostile"}

    # 7. A's page writes to B as a visitor who owns B: teams share a site, so the browser sends B's cookies along.
    # The same write from B's own page goes in (the request is good); from A's, B refuses it (Sec-Fetch-Site).
    Membership.objects.create(team=hostile, user=bob, role=Membership.Role.VIEWER)
    owner_of_b = new_page(sso_browser)
    sign_in(owner_of_b, stack, "bob")
    insert_url = stack.team_url("other", "/other_marker/marker/-/insert")
    for slug, row_id in (("other", 1), ("hostile", 2)):
        owner_of_b.goto(stack.team_url(slug))
        owner_of_b.wait_for_selector(f"text={slug}_marker")
        owner_of_b.evaluate(INSERT_ROW, [insert_url, row_id])
    assert team_rows(volume_data(other, settings) / "other_marker.db") == [(1,)]


@needs_chromium
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_toss_check_sees_a_session_taken_over_when_the_cookie_names_allow_it(sso_stack, sso_browser,  # noqa: F811
                                                                                 settings):
    """The same toss against a control plane whose session cookie has no `__Host-` prefix (the embedded run's
    names): the browser keeps it for the parent domain and Alice's browser is then Mallory's at the control plane.
    So the check above can fail; the prefix is what makes it pass."""
    stack = sso_stack
    settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME = "sessionid", "csrftoken"
    alice, mallory = verified_user("alice"), verified_user("mallory")
    for slug, user in (("alices", alice), ("mallorys", mallory)):
        team = Team.objects.create(slug=slug, name=slug, region=settings.REGIONS[0])
        Membership.objects.create(team=team, user=user, role=Membership.Role.OWNER)
    page = new_page(sso_browser)
    sign_in(page, stack, "alice")
    assert my_teams(page, stack) == {"alices"}
    landed = toss(page, stack, "alices", {settings.SESSION_COOKIE_NAME: session_key_of(mallory, settings)})
    assert landed == ["sessionid"]
    assert my_teams(page, stack) == {"mallorys"}
