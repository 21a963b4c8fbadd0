"""Members and single sign-on in real Chromium against real instances (Datasette + Litestream through the router),
in the production topology (tests/sso_stack.py): sign up, verify by mail, create a team, open it as its owner,
upload a CSV; invite a viewer who signs up, accepts, reads but cannot write, and is shut out within seconds of
being removed; an anonymous visitor is sent to sign in; a member of one team is refused at another; signing out
at the control plane signs out of the team.
"""

from __future__ import annotations

import json

import pytest

from teams.models import Membership

from .sso_stack import (  # noqa: F401 (the fixtures: production_cookie_settings, sso_browser, sso_stack...)
    PASSWORD, START_TIMEOUT_MS, link_in_mail, needs_chromium, new_page, production_cookie_settings, sign_in,
    sso_browser, sso_stack, team_actor_email, tls_certificate, verified_user,
)
from .test_instance import needs_instance_venv, wait_for
from .test_local_backend import local  # noqa: F401 (the fixture)
from .test_router_stack import queue_team, wait_until_running

pytestmark = [needs_instance_venv, needs_chromium, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STORIES_CSV = b"id,title\n1,Alpha\n2,Beta\n3,Gamma\n"
# At most CLOUDCTL_SSO_REVALIDATE_SECONDS (2 here) after a removal, a member's next request is refused; the
# acceptance allows 60 s.
REMOVAL_DEADLINE = 60


def sign_up(page, stack, address: str, *, invited: bool = False) -> None:
    """allauth's sign-up from where the page is (or the sign-up page), then signed in. The address is proven by the
    verification mail's link, or, `invited`, by the invitation it came with (no mail then)."""
    if "/accounts/signup/" not in page.url:
        page.goto(stack.url("/accounts/signup/"))
    page.fill("#id_email", address)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("form:has(#id_password1) [type=submit]")
    page.wait_for_load_state()
    verification_sent = page.url.startswith(stack.url("/accounts/confirm-email/"))  # allauth's page
    assert verification_sent is not invited, page.url
    if verification_sent:
        confirm = wait_for(lambda: link_in_mail(stack.mail_dir, address, r"/accounts/confirm-email/."), timeout=30,
                           message=f"the verification mail to {address}")
        page.goto(confirm)
        page.click("form[action*='confirm-email'] [type=submit]")
    page.goto(stack.url("/teams/"))
    if page.url.startswith(stack.url("/accounts/login/")):
        sign_in(page, stack, address)
    assert page.url.startswith(stack.url("/teams/")), page.url


def read_with(stack, token: str):
    """The stories through the router with a Datasette API token, as a program reads them (no cookie)."""
    with stack.team("newsroom") as team:
        return team.get("/data/stories.json?_shape=array", headers={"Authorization": f"Bearer {token}"})


def insert_status(page) -> int:
    """A row inserted through Datasette's JSON write API from the team's own page (same origin, its cookies)."""
    return page.evaluate("""() => fetch("/data/stories/-/insert", {method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({row: {id: 4, title: "Delta"}})}).then(answer => answer.status)""")


def test_members_sign_up_share_a_team_and_lose_it(sso_stack, sso_browser, settings):  # noqa: F811
    stack = sso_stack
    # Someone else's team, starting while the owner signs up: the owner is refused there at the end.
    stranger = verified_user("stranger")
    elsewhere = queue_team("elsewhere", settings, marker=True)
    Membership.objects.create(team=elsewhere, user=stranger, role=Membership.Role.OWNER)

    # The owner signs up (open mode), verifies the address from the mail, creates a team, waits for it to run.
    owner = new_page(sso_browser)
    sign_up(owner, stack, "owner@example.com")
    owner.goto(stack.url("/new-team/"))
    owner.fill("#id_slug", "newsroom")
    owner.fill("#id_name", "Newsroom")
    owner.click("#team-create [type=submit]")
    owner.wait_for_url(stack.url("/teams/newsroom/"))
    owner.wait_for_selector('#instance-state[data-state="running"]', timeout=START_TIMEOUT_MS)

    # Its subdomain: the handoff to the control plane and back, then Datasette as the owner.
    owner.goto(stack.team_url("newsroom"))
    owner.wait_for_selector("text=data")
    assert owner.url.startswith(stack.team_url("newsroom")), owner.url
    assert team_actor_email(owner, stack, "newsroom") == "owner@example.com"

    # A CSV through datasette-upload-csvs' page, then its rows.
    owner.goto(stack.team_url("newsroom", "/-/upload-csvs"))
    owner.set_input_files("#csvUpload", files=[{"name": "stories.csv", "mimeType": "text/csv",
                                                "buffer": STORIES_CSV}])
    owner.click("#uploadForm [type=submit]")
    owner.wait_for_url(stack.team_url("newsroom", "/data/stories"))
    owner.wait_for_selector("text=Gamma")

    # A viewer, invited by mail, signs up with that address and accepts.
    owner.goto(stack.url("/teams/newsroom/"))
    owner.fill("#invite [name=email]", "viewer@example.com")
    owner.select_option("#invite [name=role]", "viewer")
    owner.click("#invite [type=submit]")
    invitation = wait_for(lambda: link_in_mail(stack.mail_dir, "viewer@example.com", r"/invitation/\?key="),
                          timeout=30, message="the invitation mail")
    viewer = new_page(sso_browser)
    viewer.goto(invitation)
    sign_up(viewer, stack, "viewer@example.com", invited=True)
    viewer.goto(invitation)
    viewer.click("#accept")
    viewer.wait_for_url(stack.url("/teams/newsroom/"))

    # The viewer reads the table, and cannot write: neither the JSON write API nor the upload page.
    viewer.goto(stack.team_url("newsroom", "/data/stories"))
    viewer.wait_for_selector("text=Gamma")
    assert team_actor_email(viewer, stack, "newsroom") == "viewer@example.com"
    viewer.goto(stack.team_url("newsroom", "/data/stories"))
    assert insert_status(viewer) == 403
    assert viewer.goto(stack.team_url("newsroom", "/-/upload-csvs")).status == 403
    owner.goto(stack.team_url("newsroom", "/data/stories.json?_shape=array"))
    assert [row["title"] for row in json.loads(owner.inner_text("body"))] == ["Alpha", "Beta", "Gamma"]
    # The viewer's own Datasette API token (it names the user): it reads through the router, as the viewer.
    viewer.goto(stack.team_url("newsroom", "/-/create-token"))
    viewer.click("form.core [type=submit]")
    token = viewer.get_attribute("input.copyable", "value")
    assert token.startswith("dstok_")
    assert [row["title"] for row in read_with(stack, token).json()] == ["Alpha", "Beta", "Gamma"]

    # The owner removes the viewer: within seconds the viewer's next request at the team is refused (sent to sign
    # in to the team, where the control plane refuses a non-member).
    owner.goto(stack.url("/teams/newsroom/"))
    owner.click("#members tr:has-text('viewer@example.com') form[action*='/remove/'] [type=submit]")
    owner.wait_for_load_state()
    assert not Membership.objects.filter(team__slug="newsroom", user__email="viewer@example.com").exists()

    def viewer_refused():
        answer = viewer.goto(stack.team_url("newsroom", "/data/stories"))
        return viewer.url.startswith(stack.url("/sso/authorize")) and answer.status == 403

    wait_for(viewer_refused, timeout=REMOVAL_DEADLINE, interval=1, message="the removed viewer to be refused")
    assert "Gamma" not in viewer.content()
    # Their API token too (the instance asks about the user as often).
    wait_for(lambda: read_with(stack, token).status_code == 403, timeout=REMOVAL_DEADLINE, interval=1,
             message="the removed viewer's API token to be refused")
    assert "Gamma" not in read_with(stack, token).text

    # An anonymous visitor lands on the control plane's sign-in page.
    anonymous = new_page(sso_browser)
    anonymous.goto(stack.team_url("newsroom"))
    assert anonymous.url.startswith(stack.url("/accounts/login/")), anonymous.url
    assert "Gamma" not in anonymous.content()

    # The owner of one team, at another's: a 403 page at the control plane's authorize.
    wait_until_running(elsewhere)
    answer = owner.goto(stack.team_url("elsewhere"))
    assert owner.url.startswith(stack.url("/sso/authorize")) and answer.status == 403, (owner.url, answer.status)
    assert "elsewhere_marker" not in owner.content()

    # Signing out at the control plane ends the owner's sign-in at the team too: sent to sign in again.
    assert team_actor_email(owner, stack, "newsroom") == "owner@example.com"
    owner.goto(stack.url("/teams/"))
    owner.click("#logout-form [type=submit]")
    owner.wait_for_load_state()

    def owner_signed_out_of_the_team():
        owner.goto(stack.team_url("newsroom", "/data/stories"))
        return owner.url.startswith(stack.url("/accounts/login/"))

    wait_for(owner_signed_out_of_the_team, timeout=REMOVAL_DEADLINE, interval=1,
             message="the sign-out to reach the team")
