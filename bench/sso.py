#!/usr/bin/env python
"""Single sign-on to a team's instance (docs/sso.md), against the real control plane, in one run:

1. Per request: what the sign-in gate costs a member browsing (bench/team_auth.py's comparison: the instance
   virtualenv's Datasette bare and anonymous, and with the instance's plugins and a member's `ds_actor`, one
   kept-alive client, alternating rounds), here re-validated by the control plane's real private API
   (`/private/v1/sso/actor`) for a grant redeemed from a real code; in steady state it is asked once a minute.
2. The sign-in round trip of a member already signed in to the control plane, through the embedded stack (the
   control plane's server, the router, a real team instance on the local backend): the member's session is made
   through Django (no sign-in form); each round a client without an instance cookie GETs the team's URL:
   302 to /sso/authorize -> 302 with a code to the instance's callback -> the instance redeems it on the private
   API and sets its cookie -> 302 to the page -> the page (200). Timed from the first request to the page's 200.

    .venv/bin/python bench/sso.py [--rounds 50] [--requests 2000] [--concurrency 16] [--seconds 2]

Targets: per request at most 1.1 (p50 with the gate / without); round trip p50 at most 300 ms.
Last line: `ratio: <per-request p50 with the gate / without>`.
"""

import argparse
import base64
import hashlib
import secrets
import sys
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.support.datasette import INSTANCE_BIN, answers, poll  # noqa: E402
from bench.support.embedded_stack import embedded_stack  # noqa: E402
from bench.support.private_api import percentile  # noqa: E402
from bench.team_auth import SECRET, per_request, report  # noqa: E402

SLUG = "bench"


def member_session(email: str):
    """A user, their control-plane session (made as a sign-in leaves it, by Django's test client) and the team
    they created (its owner, as on /new-team/): (user, session cookie name, its value, team)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from members.services import create_team

    user = get_user_model().objects.create_user(username=email.split("@")[0], email=email,
                                                password=secrets.token_urlsafe(24))
    team = create_team(SLUG, "bench", actor=user)
    browser = Client()
    browser.force_login(user)
    return user, settings.SESSION_COOKIE_NAME, browser.cookies[settings.SESSION_COOKIE_NAME].value, team


def redeemed_grant(team, user, session_cookie: str) -> str:
    """A grant of the member's session, as the handoff makes one: a code issued by sso.services then redeemed."""
    from importlib import import_module

    from django.conf import settings

    from credentials.audit import Client
    from sso.services import AuthorizeRequest, callback_url, issue_code, redeem_code, session_reference

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_cookie)
    client = Client(ip="127.0.0.1", user_agent="bench/sso.py")
    location = issue_code(AuthorizeRequest(team=team, redirect_uri=callback_url(team), state=secrets.token_urlsafe(16),
                                           code_challenge=challenge),
                          user, session_reference(session), client)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    return redeem_code(team, code, verifier, callback_url(team), client)["session"]


def round_trip(stack, team_client, plane_client) -> dict:
    """One sign-in through the handoff, each hop checked; the seconds each took, and the whole."""
    import httpx

    team_url, team_headers = stack.through_router(SLUG)
    team_client.cookies.clear()
    hops = {}
    started = time.perf_counter()
    response = team_client.get(team_url, headers={**team_headers, "Accept": "text/html"})
    hops["to authorize"] = time.perf_counter() - started
    authorize = expect_redirect(response, stack.control_plane_url + "/sso/authorize")
    mark = time.perf_counter()
    response = plane_client.get(authorize)
    hops["authorize"] = time.perf_counter() - mark
    callback = urllib.parse.urlsplit(expect_redirect(response, f"http://{SLUG}.localhost:{stack.router_port}/-/sso/"))
    mark = time.perf_counter()
    response = team_client.get(f"{team_url.rstrip('/')}{callback.path}?{callback.query}", headers=team_headers)
    hops["callback (redeem)"] = time.perf_counter() - mark
    page = expect_redirect(response, "/")
    mark = time.perf_counter()
    response = team_client.get(f"{team_url.rstrip('/')}{page}", headers={**team_headers, "Accept": "text/html"})
    hops["page"] = time.perf_counter() - mark
    if response.status_code != 200:
        raise httpx.HTTPError(f"the page after signing in answered {response.status_code}")
    hops["whole"] = time.perf_counter() - started
    return hops


def expect_redirect(response, prefix: str) -> str:
    location = response.headers.get("location", "")
    if response.status_code != 302 or not location.startswith(prefix):
        raise RuntimeError(f"{response.request.url} answered {response.status_code} to {location!r}, "
                           f"not a redirect to {prefix}: {response.text[:300]}")
    return location


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")

    with embedded_stack("sso", real_sign_in=True) as stack:
        import httpx

        from tests.instance_sso import actor_cookie
        from teams.tokens import team_token

        user, cookie_name, session_cookie, team = member_session("member@bench.example")
        health_url, health_headers = stack.through_router(SLUG, "/-/versions.json")
        poll(lambda: answers(health_url, health_headers), "the team's instance through the router")

        print("1. per request, the gate re-validating with the control plane's private API:", flush=True)
        grant = redeemed_grant(team, user, session_cookie)
        cookie = actor_cookie(SECRET, user_id=str(user.pk), grant=grant)
        result = per_request(control_plane_url=stack.control_plane_url, team_id=str(team.pk),
                             team_token=team_token(team), cookie=cookie, requests=args.requests,
                             concurrency=args.concurrency, seconds=args.seconds)

        print(f"\n2. the sign-in round trip, {args.rounds} rounds:", flush=True)
        hops = []
        with httpx.Client(timeout=30) as team_client, \
                httpx.Client(timeout=30, cookies={cookie_name: session_cookie}) as plane_client:
            round_trip(stack, team_client, plane_client)  # connections opened, the first request's imports done
            for _ in range(args.rounds):
                hops.append(round_trip(stack, team_client, plane_client))

    print()
    report(result, args.concurrency)
    print("sign-in round trip (first request -> the page's 200), ms: " + "; ".join(
        f"{hop} p50 {percentile([taken[hop] for taken in hops], 50) * 1000:.1f} "
        f"p90 {percentile([taken[hop] for taken in hops], 90) * 1000:.1f}" for hop in hops[0]))
    whole = [taken["whole"] * 1000 for taken in hops]
    print(f"round trip: p50 {percentile(whole, 50):.1f} ms, p90 {percentile(whole, 90):.1f} ms (target p50 <= 300 ms)")
    print(f"ratio: {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
