"""Single sign-on, the control plane's side (docs/sso.md §1-3): the authorize page, the code's redemption and the
re-validation of grants and users, with the Django test client standing in for the browser and the instance."""

import base64
import hashlib
import json
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core import checks
from django.db import connection
from django.http import QueryDict
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from credentials.audit import Client as AuditClient
from credentials.models import CredentialEvent
from sso.checks import control_plane_cookies_stay_home, revalidation_interval
from sso.models import AuthorizationCode, InstanceSession, SSOEvent
from sso.services import Refused, callback_url, issue_code, prune_single_sign_on, read_authorize_request
from teams.models import Membership, Team
from teams.tokens import rotate_team_token, team_token

from .staff import PASSWORD

AUTHORIZE = "/sso/authorize"
TOKEN = "/private/v1/sso/token"
ACTOR = "/private/v1/sso/actor"
Reason = SSOEvent.Reason


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_query(for_team, challenge, **overrides) -> dict:
    params = {"team": str(for_team.pk), "redirect_uri": callback_url(for_team), "state": "state-" + "s" * 20,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(overrides)
    return {name: value for name, value in params.items() if value is not None}


def post_json(client, url, token, body, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **headers, **extra)


@pytest.fixture
def team(make_team):
    return make_team("acme")


@pytest.fixture
def member(team, django_user_model):
    user = django_user_model.objects.create_user("ada", email="ada@example.com", password=PASSWORD)
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    return user


class Handoff:
    """The browser and the instance of one sign-in: authorize, then redeem."""

    def __init__(self, client, team):
        self.client, self.team = client, team
        self.verifier, self.challenge = pkce()

    def authorize(self, **overrides):
        return self.client.get(AUTHORIZE, authorize_query(self.team, self.challenge, **overrides))

    def code(self) -> str:
        response = self.authorize()
        assert response.status_code == 302, response.content
        return parse_qs(urlsplit(response["Location"]).query)["code"][0]

    def redeem(self, code, *, token=None, **overrides):
        body = {"code": code, "code_verifier": self.verifier, "redirect_uri": callback_url(self.team), **overrides}
        return post_json(self.client, TOKEN, token or team_token(self.team), body)

    def sign_in(self) -> dict:
        response = self.redeem(self.code())
        assert response.status_code == 200, response.content
        return response.json()


@pytest.fixture
def handoff(client, team, member):
    client.force_login(member)
    return Handoff(client, team)


def revalidate(client, team, body):
    return post_json(client, ACTOR, team_token(team), body)


def refusals(**filters):
    return list(SSOEvent.objects.filter(kind=SSOEvent.Kind.REFUSED, **filters).values_list("reason", flat=True))


# --- the whole handoff ----------------------------------------------------------------------------------

def test_a_member_is_sent_back_with_a_code_and_the_instance_gets_the_actor_with_its_role(handoff, team, member):
    response = handoff.authorize()
    assert response.status_code == 302
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://acme.teams.example.com/-/sso/callback"
    query = parse_qs(location.query)
    assert query["state"] == ["state-" + "s" * 20]
    assert len(query["code"][0]) == 43

    redeemed = handoff.redeem(query["code"][0])
    assert redeemed.status_code == 200
    assert redeemed["Cache-Control"] == "no-store"
    body = redeemed.json()
    assert body["actor"] == {"id": str(member.pk), "email": "ada@example.com", "role": "member"}
    assert body["revalidate_after"] == 60
    assert len(body["session"]) >= 43

    again = revalidate(handoff.client, team, {"session": body["session"]})
    assert again.status_code == 200
    assert again.json() == {"actor": body["actor"], "revalidate_after": 60}
    kinds = list(SSOEvent.objects.order_by("pk").values_list("kind", "team", "user"))
    assert kinds == [("issued", team.pk, member.pk), ("redeemed", team.pk, member.pk)]


def test_codes_and_grants_are_stored_only_as_digests(handoff, team):
    code = handoff.code()
    grant = handoff.redeem(code).json()["session"]
    session_cookie = handoff.client.cookies["sessionid"].value
    row = AuthorizationCode.objects.get()
    assert row.code_digest == hashlib.sha256(code.encode()).hexdigest()
    assert InstanceSession.objects.get().grant_digest == hashlib.sha256(grant.encode()).hexdigest()
    # No column of any table holds the code, the grant, the verifier or the session cookie's value.
    secrets_in_clear = [code, grant, handoff.verifier, session_cookie]
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for values in cursor.fetchall():
                text = " ".join(str(value) for value in values)
                assert not [secret for secret in secrets_in_clear if secret in text], table


# --- §1 authorize -------------------------------------------------------------------------------------------

def test_signing_in_first_comes_back_to_the_same_authorize_url(client, team, member):
    handoff = Handoff(client, team)
    response = handoff.authorize()
    assert response.status_code == 302
    login = urlsplit(response["Location"])
    assert login.path == "/accounts/login/"
    back = parse_qs(login.query)["next"][0]
    assert urlsplit(back).path == AUTHORIZE
    assert parse_qs(urlsplit(back).query) == {name: [value] for name, value in
                                              authorize_query(team, handoff.challenge).items()}
    signed_in = client.post(response["Location"], {"login": "ada", "password": PASSWORD})
    assert signed_in.status_code == 302 and signed_in["Location"] == back
    assert client.get(back)["Location"].startswith(callback_url(team) + "?code=")


@pytest.mark.parametrize("overrides, problem", [
    ({"team": None}, "team"),
    ({"team": "acme"}, "team"),
    ({"team": "-1"}, "team"),
    ({"team": "9" * 30}, "team"),
    ({"state": None}, "state"),
    ({"state": "short"}, "state"),
    ({"state": "s" * 257}, "state"),
    ({"state": "has spaces in it, sixteen+"}, "state"),
    ({"code_challenge": None}, "code_challenge"),
    ({"code_challenge": "x" * 42}, "code_challenge"),
    ({"code_challenge": "=" * 43}, "code_challenge"),
    ({"code_challenge_method": "plain"}, "code_challenge_method"),
    ({"code_challenge_method": None}, "code_challenge_method"),
    ({"redirect_uri": None}, "redirect_uri"),
    ({"redirect_uri": "https://" + "a" * 600}, "redirect_uri"),
])
def test_malformed_authorize_requests_get_a_400_page_and_no_redirect(handoff, overrides, problem):
    response = handoff.authorize(**overrides)
    assert response.status_code == 400
    assert "Location" not in response
    assert problem in response.content.decode()
    assert refusals() == [Reason.BAD_REQUEST]
    assert not AuthorizationCode.objects.exists()


def test_a_parameter_given_twice_is_malformed(handoff, team):
    query = urlencode(authorize_query(team, handoff.challenge)) + "&team=999"
    response = handoff.client.get(f"{AUTHORIZE}?{query}")
    assert response.status_code == 400 and "Location" not in response
    assert refusals() == [Reason.BAD_REQUEST]


def test_an_unknown_team_is_a_400_recorded_as_claimed(handoff):
    response = handoff.authorize(team="987654")
    assert response.status_code == 400 and "Location" not in response
    event = SSOEvent.objects.get()
    assert (event.reason, event.team, event.claimed_team_id) == (Reason.UNKNOWN_TEAM, None, 987654)


@pytest.mark.parametrize("redirect_uri", [
    "https://evil.example/-/sso/callback",
    "//evil.example/-/sso/callback",
    "https://acme.teams.example.com@evil.example/-/sso/callback",
    "https://evil.example@acme.teams.example.com/-/sso/callback",
    "https://evil.example/acme.teams.example.com/-/sso/callback",
    "https://acme.teams.example.com.evil.example/-/sso/callback",
    "http://acme.teams.example.com/-/sso/callback",
    "https://acme.teams.example.com:8443/-/sso/callback",
    "https://ACME.teams.example.com/-/sso/callback",
    "https://acme.teams.example.com/-/sso/callback?next=https://evil.example",
    "https://acme.teams.example.com/-/sso/callback#x",
    "https://acme.teams.example.com/-/sso/callback/",
    "https://acme.teams.example.com/-/sso/../callback",
    "https://acme.teams.example.com/db",
    "https://other.teams.example.com/-/sso/callback",
    "javascript:alert(1)//acme.teams.example.com/-/sso/callback",
    "/-/sso/callback",
    "",
])
def test_a_redirect_uri_that_is_not_exactly_the_teams_callback_is_a_400_without_redirect(
        handoff, team, make_team, redirect_uri):
    make_team("other")
    response = handoff.authorize(redirect_uri=redirect_uri)
    assert response.status_code == 400
    assert "Location" not in response
    assert "evil" not in response.content.decode()
    event = SSOEvent.objects.get()
    assert (event.reason, event.team, event.claimed_team_id) == (Reason.WRONG_REDIRECT_URI, None, team.pk)


def test_another_teams_callback_is_refused(handoff, make_team):
    other = make_team("other")
    response = handoff.authorize(redirect_uri=callback_url(other))
    assert response.status_code == 400 and "Location" not in response
    assert refusals() == [Reason.WRONG_REDIRECT_URI]


def test_a_non_member_gets_a_403_page(client, team, django_user_model):
    stranger = django_user_model.objects.create_user("bob", password=PASSWORD)
    client.force_login(stranger)
    response = Handoff(client, team).authorize()
    assert response.status_code == 403 and "Location" not in response
    event = SSOEvent.objects.get()
    assert (event.reason, event.user, event.team, event.claimed_team_id) == (
        Reason.NOT_A_MEMBER, stranger, None, team.pk)


def test_staff_are_not_members_by_being_staff(staff_client, team):
    response = Handoff(staff_client, team).authorize()
    assert response.status_code == 403 and "Location" not in response
    assert refusals() == [Reason.NOT_A_MEMBER]


def test_a_member_of_a_disabled_team_gets_a_403_page(handoff, team):
    Team.objects.filter(pk=team.pk).update(status=Team.Status.DISABLED)
    response = handoff.authorize()
    assert response.status_code == 403 and "Location" not in response
    assert refusals() == [Reason.TEAM_DISABLED]


def test_an_inactive_user_gets_no_code(handoff, team, member):
    get_user_model().objects.filter(pk=member.pk).update(is_active=False)
    response = handoff.authorize()
    # Django no longer counts them as signed in: they are sent to sign in, never to the team.
    assert urlsplit(response["Location"]).path == "/accounts/login/"
    member.refresh_from_db()
    client = AuditClient(ip="127.0.0.1")
    authorize = read_authorize_request(QueryDict(urlencode(authorize_query(team, handoff.challenge))), client)
    with pytest.raises(Refused) as refused:
        issue_code(authorize, member, "reference", client)
    assert refused.value.status == 403
    assert Reason.USER_DISABLED in refusals()
    assert not AuthorizationCode.objects.exists()


# --- §2 redeem ----------------------------------------------------------------------------------------------

def assert_invalid_grant(response, description):
    assert response.status_code == 400, response.content
    assert response.json() == {"error": "invalid_grant", "error_description": description}


def test_a_code_works_once(handoff):
    code = handoff.code()
    assert handoff.redeem(code).status_code == 200
    assert_invalid_grant(handoff.redeem(code), "code already used")
    assert refusals() == [Reason.CODE_USED]


def test_the_first_attempt_burns_the_code_even_when_refused(handoff):
    code = handoff.code()
    assert_invalid_grant(handoff.redeem(code, code_verifier=pkce()[0]), "missing or wrong code_verifier")
    assert_invalid_grant(handoff.redeem(code), "code already used")
    assert refusals() == [Reason.CODE_USED, Reason.BAD_VERIFIER]


def test_a_code_redeemed_with_another_teams_token_is_refused_and_charged_to_the_caller(handoff, team, make_team):
    other = make_team("other")
    code = handoff.code()
    assert_invalid_grant(handoff.redeem(code, token=team_token(other)), "code of another team")
    refused = SSOEvent.objects.get(kind=SSOEvent.Kind.REFUSED)
    issued = SSOEvent.objects.get(kind=SSOEvent.Kind.ISSUED)
    assert (refused.reason, refused.team, refused.claimed_team_id) == (Reason.WRONG_TEAM, other, None)
    assert refused.fingerprint == issued.fingerprint and issued.team == team
    assert not SSOEvent.objects.filter(kind=SSOEvent.Kind.REFUSED, team=team).exists()
    # Burnt: the right team cannot use it either.
    assert_invalid_grant(handoff.redeem(code), "code already used")


def test_another_redirect_uri_at_redemption_is_refused(handoff, make_team):
    other = make_team("other")
    assert_invalid_grant(handoff.redeem(handoff.code(), redirect_uri=callback_url(other)),
                         "redirect_uri differs from the authorize request's")
    assert refusals() == [Reason.REDIRECT_URI_MISMATCH]


def test_an_expired_code_is_refused(handoff):
    code = handoff.code()
    AuthorizationCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_invalid_grant(handoff.redeem(code), "code expired")
    assert refusals() == [Reason.CODE_EXPIRED]


def test_a_code_lives_sixty_seconds(handoff):
    handoff.code()
    code = AuthorizationCode.objects.get()
    assert code.expires_at - code.created_at == timedelta(seconds=60)


@pytest.mark.parametrize("verifier", [None, "", 42, "x" * 42, "x" * 129, "not the verifier but long enough " * 2])
def test_a_missing_or_wrong_verifier_is_refused(handoff, verifier):
    code = handoff.code()
    overrides = {"code_verifier": verifier}
    if verifier is None:
        body = {"code": code, "redirect_uri": callback_url(handoff.team)}
        response = post_json(handoff.client, TOKEN, team_token(handoff.team), body)
    else:
        response = handoff.redeem(code, **overrides)
    assert_invalid_grant(response, "missing or wrong code_verifier")
    assert refusals() == [Reason.BAD_VERIFIER]


def test_an_unknown_code_is_refused(handoff):
    assert_invalid_grant(handoff.redeem(secrets.token_urlsafe(32)), "unknown code")
    assert refusals() == [Reason.UNKNOWN_CODE]


def test_a_code_whose_control_plane_session_ended_is_refused(handoff):
    code = handoff.code()
    handoff.client.post("/accounts/logout/")
    assert_invalid_grant(handoff.redeem(code), "the control-plane session ended")


def test_a_member_removed_since_the_code_was_issued_is_refused(handoff, member):
    code = handoff.code()
    Membership.objects.filter(user=member).delete()
    assert_invalid_grant(handoff.redeem(code), "not a member")
    assert refusals() == [Reason.NOT_A_MEMBER]


@pytest.mark.parametrize("url", [TOKEN, ACTOR])
def test_the_team_token_is_checked_as_for_credentials(client, team, url):
    revoked = team_token(team)
    rotate_team_token(team)
    for token in (None, "not a token", revoked):
        response = post_json(client, url, token, {"code": "x" * 43, "session": "x" * 43})
        assert response.status_code == 401
        assert response.json()["error"] in ("missing token", "invalid token")
    endpoint = url.rsplit("/", 1)[1]
    reasons = CredentialEvent.objects.filter(signal=f"sso_{endpoint}").values_list("reason", flat=True)
    assert sorted(reasons) == ["malformed", "missing_token", "revoked"]
    Team.objects.filter(pk=team.pk).update(status=Team.Status.DISABLED)
    response = post_json(client, url, team_token(team), {"code": "x" * 43})
    assert (response.status_code, response.json()) == (403, {"error": "team disabled"})
    assert not AuthorizationCode.objects.exists() and not SSOEvent.objects.exists()


@pytest.mark.parametrize("url", [TOKEN, ACTOR])
def test_private_endpoints_answer_bad_requests_in_json(client, team, url, settings):
    token = team_token(team)
    get = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert get.status_code == 405 and get.json() == {"error": "use POST"}
    for body in (b"", b"not json", b"[1, 2]", b"\xff\xfe", b"null", b'"code"'):
        response = post_json(client, url, token, body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_request"
    large = post_json(client, url, token, {"code": "x" * (settings.PRIVATE_API_MAX_BODY + 1)})
    assert large.status_code == 413 and "body over" in large.json()["error"]


@pytest.mark.parametrize("body", [{}, {"code": None}, {"code": 12}, {"code": "short"}, {"code": "x" * 200},
                                  {"code": "not/urlsafe+" * 4}])
def test_a_redemption_without_a_usable_code_is_a_400(client, team, body):
    response = post_json(client, TOKEN, team_token(team), body)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


# --- §3 re-validate -----------------------------------------------------------------------------------------

def test_signing_out_ends_the_instances_session(handoff, team):
    grant = handoff.sign_in()["session"]
    handoff.client.post("/accounts/logout/")
    assert InstanceSession.objects.get().ended_at is not None  # by the sign-out itself
    response = revalidate(handoff.client, team, {"session": grant})
    assert (response.status_code, response.json()) == (403, {"error": "session_ended"})
    assert SSOEvent.objects.filter(kind=SSOEvent.Kind.REVALIDATION_REFUSED, reason=Reason.SESSION_ENDED).exists()


def test_signing_out_elsewhere_leaves_this_sessions_grant(handoff, team, member):
    grant = handoff.sign_in()["session"]
    elsewhere = Client()
    elsewhere.force_login(member)
    elsewhere.post("/accounts/logout/")
    assert revalidate(handoff.client, team, {"session": grant}).status_code == 200


@pytest.mark.parametrize("end", [
    lambda: Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1)),
    lambda: Session.objects.all().delete(),
], ids=["expired", "deleted"])
def test_the_control_plane_session_expiring_or_deleted_ends_the_grant(handoff, team, end):
    grant = handoff.sign_in()["session"]
    end()
    response = revalidate(handoff.client, team, {"session": grant})
    assert (response.status_code, response.json()) == (403, {"error": "session_ended"})


def test_removing_the_member_is_seen_at_once(handoff, team, member):
    grant = handoff.sign_in()["session"]
    Membership.objects.filter(user=member).delete()
    for body in ({"session": grant}, {"user": str(member.pk)}):
        response = revalidate(handoff.client, team, body)
        assert (response.status_code, response.json()) == (403, {"error": "not_a_member"})


def test_a_role_change_is_seen_at_once(handoff, team, member):
    grant = handoff.sign_in()["session"]
    Membership.objects.filter(user=member).update(role=Membership.Role.ADMIN)
    for body in ({"session": grant}, {"user": str(member.pk)}):
        response = revalidate(handoff.client, team, body)
        assert response.status_code == 200
        assert response.json()["actor"] == {"id": str(member.pk), "email": "ada@example.com", "role": "admin"}


def test_deactivating_the_user_is_seen_at_once(handoff, team, member):
    grant = handoff.sign_in()["session"]
    get_user_model().objects.filter(pk=member.pk).update(is_active=False)
    for body in ({"session": grant}, {"user": str(member.pk)}):
        response = revalidate(handoff.client, team, body)
        assert (response.status_code, response.json()) == (403, {"error": "user_disabled"})


def test_a_grant_is_worth_nothing_to_another_team(handoff, make_team, member):
    grant = handoff.sign_in()["session"]
    other = make_team("other")
    Membership.objects.create(team=other, user=member, role=Membership.Role.OWNER)
    response = revalidate(handoff.client, other, {"session": grant})
    assert (response.status_code, response.json()) == (403, {"error": "session_ended"})
    # The user form answers for the caller's own team only.
    assert revalidate(handoff.client, other, {"user": str(member.pk)}).json()["actor"]["role"] == "owner"


@pytest.mark.parametrize("body", [{}, {"session": "x" * 43, "user": "1"}, {"session": 5}, {"user": 5},
                                  {"user": "abc"}, {"user": "0"}, {"session": ""}, {"user": "9" * 40}])
def test_a_malformed_revalidation_is_a_400(client, team, body):
    response = post_json(client, ACTOR, team_token(team), body)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_an_unknown_user_or_grant_is_refused(client, team):
    assert revalidate(client, team, {"user": "424242"}).json() == {"error": "not_a_member"}
    assert revalidate(client, team, {"session": secrets.token_urlsafe(32)}).json() == {"error": "session_ended"}


# --- fuzz ------------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)
BODIES = (st.binary(max_size=300)
          | st.dictionaries(st.sampled_from(["code", "code_verifier", "redirect_uri", "session", "user"]),
                            JSON_VALUES, max_size=4).map(lambda body: json.dumps(body).encode()))


@hypothesis_settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(url=st.sampled_from([TOKEN, ACTOR]), body=BODIES)
def test_bad_bodies_get_a_4xx_never_a_5xx(client, team, url, body):
    response = client.post(url, data=body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {team_token(team)}")
    assert 400 <= response.status_code < 500, (body, response.content)
    assert response["Content-Type"] == "application/json"


# --- pruning ------------------------------------------------------------------------------------------------

def test_pruning_drops_expired_codes_and_old_rows_and_ends_orphaned_grants(handoff, settings):
    handoff.sign_in()
    handoff.code()
    later = timezone.now() + timedelta(seconds=61)
    Session.objects.all().delete()
    assert prune_single_sign_on(later) == 2  # both codes expired
    assert InstanceSession.objects.get().ended_at == later
    assert SSOEvent.objects.count() == 3
    after_retention = later + timedelta(days=settings.AUDIT_RETENTION_DAYS, seconds=1)
    assert prune_single_sign_on(after_retention) == 4  # the grant and the three audit rows
    assert not InstanceSession.objects.exists() and not SSOEvent.objects.exists()


# --- cookies ------------------------------------------------------------------------------------------------

def test_the_session_cookie_is_host_only_and_lax(client, member):
    response = client.post("/accounts/login/", {"login": "ada", "password": PASSWORD})
    assert response.status_code == 302
    cookie = response.cookies["sessionid"]
    assert cookie["domain"] == "" and cookie["path"] == "/" and cookie["samesite"] == "Lax"


def test_over_https_the_cookies_are_host_prefixed_and_host_only(tmp_path):
    from .test_settings import PRODUCTION_ENV, manage

    show = ("from django.conf import settings as s; print(s.SESSION_COOKIE_NAME, s.CSRF_COOKIE_NAME, "
            "s.SESSION_COOKIE_DOMAIN, s.CSRF_COOKIE_DOMAIN, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SESSION_COOKIE_PATH, s.CSRF_COOKIE_PATH, s.SESSION_COOKIE_SAMESITE, s.CSRF_COOKIE_SAMESITE)")
    result = manage("shell", "--no-imports", "-c", show, env={**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path)})
    assert result.stdout.split() == ["__Host-sessionid", "__Host-csrftoken", "None", "None", "True", "True",
                                     "/", "/", "Lax", "Lax"], result.stderr


def check_ids(settings, public_url, teams_domain, **cookie_domains):
    settings.PUBLIC_URL, settings.TEAMS_DOMAIN = public_url, teams_domain
    for name, value in cookie_domains.items():
        setattr(settings, name, value)
    return [(problem.id, problem.level) for problem in control_plane_cookies_stay_home(None)]


@pytest.mark.parametrize("public_url, teams_domain, cookie_domains, expected", [
    ("https://cloudctl.example.net", "teams.example.com", {}, []),
    ("https://teams.example.com", "teams.example.com", {}, ["sso.E001"]),
    ("https://cp.teams.example.com", "teams.example.com", {}, ["sso.E001"]),
    ("https://cp.teams.example.com", "TEAMS.example.com.", {}, ["sso.E001"]),
    ("https://example.com", "teams.example.com", {"SESSION_COOKIE_DOMAIN": ".example.com"}, ["sso.E002"]),
    ("https://cp.example.com", "teams.example.com", {"CSRF_COOKIE_DOMAIN": "example.com"}, ["sso.E002"]),
    ("https://cp.example.com", "teams.example.com", {}, ["sso.W001"]),
    ("https://example.com", "teams.example.com", {}, ["sso.W001"]),
    ("http://localhost:8000", "localhost", {}, ["sso.E001"]),
])
def test_check_deploy_keeps_the_control_planes_cookies_from_team_hosts(settings, public_url, teams_domain,
                                                                       cookie_domains, expected):
    found = check_ids(settings, public_url, teams_domain, **cookie_domains)
    assert [problem_id for problem_id, _ in found] == expected
    for problem_id, level in found:
        assert level == (checks.ERROR if ".E" in problem_id else checks.WARNING)


def test_the_cookie_check_runs_with_check_deploy(tmp_path):
    from .test_settings import PRODUCTION_ENV, manage

    result = manage("check", "--deploy", env={**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path),
                                               "CLOUDCTL_PUBLIC_URL": "https://cp.teams.example.com",
                                               "CLOUDCTL_TEAMS_DOMAIN": "teams.example.com"})
    assert result.returncode != 0 and "sso.E001" in result.stderr + result.stdout


@pytest.mark.parametrize("seconds, ids", [(60, []), (1, []), (0, ["sso.E003"]), (61, ["sso.E003"])])
def test_instances_revalidate_at_least_every_minute(settings, seconds, ids):
    settings.SSO_REVALIDATE_SECONDS = seconds
    assert [problem.id for problem in revalidation_interval(None)] == ids
