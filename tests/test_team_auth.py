"""The instance's side of single sign-on (instance/plugins/team_auth.py, docs/sso.md §4).

A real Datasette 1.0a41 from `.venv-instance` loads the instance's plugins directory, as the entrypoint starts it,
against a fake control plane on 127.0.0.1 (tests/instance_sso.py) whose answers each test sets. Each test uses its
own grant and user ids, so the instance's cache never carries one test's answer into another.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import sqlite3
import subprocess
import threading
import urllib.parse
from pathlib import Path

import httpx
import pytest

from .instance_sso import ACTOR_PATH, TOKEN_PATH, FakeSSO, actor_cookie, api_token, member, refused
from .test_instance import INSTANCE_DIR, INSTANCE_PYTHON, entrypoint, free_port, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not INSTANCE_PYTHON.exists(), reason="the instance virtualenv (.venv-instance) is missing"),
]

SECRET = "datasette-secret-of-the-test-instance"
TEAM_TOKEN = "team-token-of-the-test-instance"
TEAM_ID = "42"
AUTHORIZE_URL = "https://cloudctl.example.com/sso/authorize"
HEALTH_PATH = "/-/versions.json"


class Instance:
    """`datasette serve` with the instance's plugins, as entrypoint.py runs it, logging to a file."""

    def __init__(self, tmp: Path, fake: FakeSSO, *, revalidate_seconds: int, plugins: Path = INSTANCE_DIR / "plugins",
                 **extra_env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"datasette-{self.port}.log"
        database = tmp / "data.db"
        if not database.exists():
            with sqlite3.connect(database) as connection:
                connection.execute("create table items (id integer primary key, name text)")
                connection.execute("insert into items (name) values ('first')")
        env = {
            "PATH": f"{INSTANCE_PYTHON.parent}:/usr/bin:/bin",
            "DATASETTE_SECRET": SECRET,
            "CLOUDCTL_TEAM_ID": TEAM_ID,
            "CLOUDCTL_TEAM_URL": self.url + "/",
            "CLOUDCTL_SSO_AUTHORIZE_URL": AUTHORIZE_URL,
            "CLOUDCTL_URL": fake.url,
            "CLOUDCTL_TOKEN": TEAM_TOKEN,
            "CLOUDCTL_SSO_REVALIDATE_SECONDS": str(revalidate_seconds),
            "CLOUDCTL_HEALTH_CHECK_PATH": HEALTH_PATH,
            **extra_env,
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(INSTANCE_PYTHON), "-m", "datasette", "serve", str(database), "--host", "127.0.0.1",
                 "--port", str(self.port), "--plugins-dir", str(plugins), "--default-deny"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.exited() or httpx.get(self.url + HEALTH_PATH).status_code == 200,
                 timeout=60, message=f"Datasette's health check at {self.url}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exited(self):
        if self.process.poll() is not None:
            pytest.fail(f"Datasette exited with {self.process.returncode}:\n{self.log()[-3000:]}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def fake():
    with FakeSSO(team_token=TEAM_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def instance(fake, tmp_path_factory):
    """Re-validating every second, so a refusal shows within the test."""
    instance = Instance(tmp_path_factory.mktemp("instance"), fake, revalidate_seconds=1)
    yield instance
    instance.stop()


@pytest.fixture(autouse=True)
def reachable(fake):
    fake.unreachable = False
    yield
    fake.unreachable = False


def signed_in(fake, user_id: str, role: str, grant: str | None = None) -> dict:
    """Cookies of a browser signed in as `user_id`, whose grant the fake confirms with `role`."""
    grant = grant or f"grant-of-{user_id}"
    fake.sessions[grant] = member(user_id, role)
    return {"ds_actor": actor_cookie(SECRET, user_id=user_id, grant=grant)}


def insert(instance, cookies=None, headers=None) -> httpx.Response:
    return instance.post("/data/items/-/insert", json={"row": {"name": "inserted"}}, cookies=cookies,
                         headers=headers)


def create_table(instance, name: str, cookies) -> httpx.Response:
    return instance.post("/data/-/create", json={"table": name, "row": {"id": 1, "name": "x"}, "pk": "id"},
                         cookies=cookies)


def start_sign_in(instance, path: str = "/data?_size=1") -> tuple[dict, str]:
    """An anonymous browser's first request: the authorize URL's parameters and the state cookie's value."""
    response = instance.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 302, response.text
    location = urllib.parse.urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == AUTHORIZE_URL
    return dict(urllib.parse.parse_qsl(location.query)), response.cookies["cloudctl_sso"]


# --- anonymous ------------------------------------------------------------------------------------------

def test_an_anonymous_browser_is_sent_to_sign_in_with_state_and_pkce(instance):
    response = instance.get("/data", headers={"Accept": "text/html"})
    assert response.status_code == 302
    location = urllib.parse.urlsplit(response.headers["location"])
    parameters = dict(urllib.parse.parse_qsl(location.query))
    assert f"{location.scheme}://{location.netloc}{location.path}" == AUTHORIZE_URL
    assert parameters["team"] == TEAM_ID
    assert parameters["redirect_uri"] == instance.url + "/-/sso/callback"
    assert parameters["code_challenge_method"] == "S256"
    assert len(parameters["code_challenge"]) == 43 and 16 <= len(parameters["state"]) <= 256
    cookie = next(value for value in response.headers.get_list("set-cookie") if value.startswith("cloudctl_sso="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "max-age", "path"} <= attributes and "domain" not in attributes
    assert "Path=/-/sso/" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "ds_actor" not in response.headers.get("set-cookie", "")
    # A fresh state and verifier for each request.
    assert start_sign_in(instance)[0]["state"] != parameters["state"]


@pytest.mark.parametrize("path", ["/", "/data", "/data/items", "/data/items.json", "/-/actor.json",
                                  "/data.db", "/-/upload-csvs", "/-/create-token"])
def test_anonymous_requests_get_nothing(instance, path):
    page = instance.get(path)
    api = instance.get(path, headers={"Accept": "application/json"})
    assert page.status_code in (302, 401) and api.status_code == 401
    assert "first" not in page.text + api.text  # the table's one row
    assert api.json()["error"] == "not_signed_in"
    assert insert(instance).status_code == 401


def test_the_health_check_path_is_open(instance):
    assert instance.get(HEALTH_PATH).status_code == 200


def test_without_its_settings_the_instance_refuses_all_but_the_health_check(fake, tmp_path):
    instance = Instance(tmp_path, fake, revalidate_seconds=60, CLOUDCTL_SSO_AUTHORIZE_URL="")
    try:
        assert instance.get(HEALTH_PATH).status_code == 200
        page = instance.get("/data", headers={"Accept": "text/html"})
        assert page.status_code == 503 and "not configured" in page.text
        assert insert(instance, signed_in(fake, "u-unconfigured", "owner")).status_code == 503
    finally:
        instance.stop()


def test_the_router_guard_refuses_before_the_sign_in_gate_looks(fake, tmp_path):
    secret = "routing-secret-of-the-test-team"
    instance = Instance(tmp_path, fake, revalidate_seconds=60, CLOUDCTL_ROUTING_SECRET=secret,
                        CLOUDCTL_HOSTNAME="acme.teams.example.com")
    try:
        direct = instance.get("/data", headers={"Accept": "text/html"})
        assert direct.status_code == 403 and "router" in direct.text and "set-cookie" not in direct.headers
        routed = instance.get("/data", headers={"Accept": "text/html", "Host": "acme.teams.example.com",
                                                "fly-replay-src": f"instance=x;state={secret}"})
        assert routed.status_code == 302 and routed.headers["location"].startswith(AUTHORIZE_URL)
        assert instance.get(HEALTH_PATH).status_code == 200
    finally:
        instance.stop()


RECORDER = """
from datasette import hookimpl

@hookimpl
def asgi_wrapper(datasette):
    def wrap(app):
        async def recording(scope, receive, send):
            if scope["type"] == "http":
                with open({log!r}, "a") as log:
                    log.write(scope["path"] + "\\n")
            await app(scope, receive, send)
        return recording
    return wrap
"""


def test_a_team_plugin_sees_only_the_requests_of_members(fake, tmp_path):
    """As the entrypoint loads a team's plugins (entrypoint.plugins_dir): the gate stays outside them."""
    seen = tmp_path / "seen.log"
    (tmp_path / "volume" / "plugins").mkdir(parents=True)
    # Named so that, on ext4, Datasette's plugins-dir glob meets it before team_auth.py: it registers first, and only
    # the gate's trylast keeps the gate outside it.
    (tmp_path / "volume" / "plugins" / "first.py").write_text(RECORDER.format(log=str(seen)))
    (tmp_path / "volume" / ".cloudctl").mkdir()
    plugins = entrypoint.plugins_dir(tmp_path / "volume" / ".cloudctl", tmp_path / "volume")
    instance = Instance(tmp_path, fake, revalidate_seconds=60, plugins=plugins)
    try:
        assert instance.get("/data/anonymous", headers={"Accept": "text/html"}).status_code == 302
        assert instance.get("/data/items.json", headers={"Accept": "application/json"}).status_code == 401
        assert instance.get("/data/items.json", cookies=signed_in(fake, "u-plugin", "viewer")).status_code == 200
        assert [path for path in seen.read_text().splitlines() if path != HEALTH_PATH] == ["/data/items.json"]
    finally:
        instance.stop()


# --- the callback ---------------------------------------------------------------------------------------

def test_signing_in_sets_the_actor_and_returns_to_the_saved_path(instance, fake):
    parameters, state_cookie = start_sign_in(instance, "/data?_size=1")
    fake.codes["code-signin-1"] = (200, {**member("u-signin", "viewer")[1], "session": "grant-signin"})
    callback = instance.get("/-/sso/callback", params={"code": "code-signin-1", "state": parameters["state"]},
                            cookies={"cloudctl_sso": state_cookie})
    assert callback.status_code == 302, callback.text
    assert callback.headers["location"] == "/data?_size=1"
    redeemed = [request for request in fake.requests if request["path"] == TOKEN_PATH][-1]
    assert redeemed["authorization"] == f"Bearer {TEAM_TOKEN}"
    assert redeemed["body"]["code"] == "code-signin-1"
    assert redeemed["body"]["redirect_uri"] == instance.url + "/-/sso/callback"
    verifier = redeemed["body"]["code_verifier"]
    assert 43 <= len(verifier) <= 128
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == parameters["code_challenge"]
    actor_cookie_header = next(value for value in callback.headers.get_list("set-cookie")
                               if value.startswith("ds_actor="))
    assert "domain" not in actor_cookie_header.lower()
    # Script on the team's pages (a customer's plugin, an injected snippet) cannot read the sign-in; the instance's
    # URL is http here, so no Secure (over https it is: test_the_actor_cookie_is_secure_over_https).
    assert "httponly" in actor_cookie_header.lower() and "secure" not in actor_cookie_header.lower()

    fake.sessions["grant-signin"] = member("u-signin", "viewer")
    cookies = {"ds_actor": callback.cookies["ds_actor"]}
    actor = instance.get("/-/actor.json", cookies=cookies).json()["actor"]
    assert actor == {"id": "u-signin", "email": "u-signin@example.com", "sso": "grant-signin"}
    assert instance.get("/data/items.json", cookies=cookies).status_code == 200
    assert "code-signin-1" not in instance.log()


def test_the_actor_cookie_is_secure_over_https(fake, tmp_path):
    """A team served over https (as in production) never lets its sign-in travel over plain http."""
    instance = Instance(tmp_path, fake, revalidate_seconds=60, CLOUDCTL_TEAM_URL="https://acme.teams.example/")
    try:
        parameters, state_cookie = start_sign_in(instance, "/data")
        fake.codes["code-secure"] = (200, {**member("u-secure", "viewer")[1], "session": "grant-secure"})
        callback = instance.get("/-/sso/callback", params={"code": "code-secure", "state": parameters["state"]},
                                cookies={"cloudctl_sso": state_cookie})
        assert callback.status_code == 302, callback.text
        actor_cookie_header = next(value for value in callback.headers.get_list("set-cookie")
                                   if value.startswith("ds_actor="))
        assert "secure" in actor_cookie_header.lower() and "httponly" in actor_cookie_header.lower()
    finally:
        instance.stop()


def test_a_callback_without_the_state_cookie_or_with_another_state_is_refused(instance, fake):
    parameters, state_cookie = start_sign_in(instance)
    fake.codes["code-bad-state"] = (200, {**member("u-bad-state", "owner")[1], "session": "grant-bad-state"})
    attempts = [
        ({"code": "code-bad-state", "state": parameters["state"]}, {}),
        ({"code": "code-bad-state", "state": parameters["state"] + "x"}, {"cloudctl_sso": state_cookie}),
        ({"code": "code-bad-state", "state": parameters["state"]}, {"cloudctl_sso": state_cookie + "x"}),
        ({"state": parameters["state"]}, {"cloudctl_sso": state_cookie}),
        ({"code": "code-bad-state"}, {"cloudctl_sso": state_cookie}),
    ]
    for params, cookies in attempts:
        response = instance.get("/-/sso/callback", params=params, cookies=cookies)
        assert response.status_code == 400, (params, cookies, response.text)
        assert "Sign in again" in response.text and "ds_actor" not in response.headers.get("set-cookie", "")
    assert "code-bad-state" in fake.codes  # never redeemed


def test_a_refused_or_failed_redemption_is_a_page_not_an_error(instance, fake):
    parameters, state_cookie = start_sign_in(instance)
    refused_page = instance.get("/-/sso/callback", params={"code": "code-unknown", "state": parameters["state"]},
                                cookies={"cloudctl_sso": state_cookie})
    assert refused_page.status_code == 403 and "Sign in again" in refused_page.text
    assert "ds_actor" not in refused_page.headers.get("set-cookie", "")

    parameters, state_cookie = start_sign_in(instance)
    fake.codes["code-malformed"] = (200, {"actor": {"id": "u-x", "role": "superuser"}, "session": "g"})
    malformed = instance.get("/-/sso/callback", params={"code": "code-malformed", "state": parameters["state"]},
                             cookies={"cloudctl_sso": state_cookie})
    assert malformed.status_code == 502 and "ds_actor" not in malformed.headers.get("set-cookie", "")

    parameters, state_cookie = start_sign_in(instance)
    fake.unreachable = True
    unreachable = instance.get("/-/sso/callback", params={"code": "code-down", "state": parameters["state"]},
                               cookies={"cloudctl_sso": state_cookie})
    assert unreachable.status_code == 503 and "control plane" in unreachable.text
    assert instance.post("/-/sso/callback").status_code == 405
    log = instance.log()
    assert "code-unknown" not in log and "code-down" not in log and "Traceback" not in log


@pytest.mark.parametrize("path", ["//evil.example/steal", "/\\evil.example/steal", "///evil.example"])
def test_the_way_back_is_always_a_local_path(instance, fake, path):
    response = httpx.get(instance.url + "/", timeout=30, headers={"Accept": "text/html"})  # a plain one first
    assert response.status_code == 302
    # The raw request target, unparsed by the client, as an attacker's link would send it.
    with httpx.Client(base_url=instance.url, timeout=30) as client:
        request = client.build_request("GET", instance.url + "/", headers={"Accept": "text/html"})
        request.url = request.url.copy_with(raw_path=path.encode())
        first = client.send(request)
    assert first.status_code == 302
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(first.headers["location"]).query))["state"]
    code = f"code-way-back-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    fake.codes[code] = (200, {**member("u-way-back", "viewer")[1], "session": "grant-way-back"})
    callback = instance.get("/-/sso/callback", params={"code": code, "state": state,
                                                       "next": "https://evil.example/"},
                            cookies={"cloudctl_sso": first.cookies["cloudctl_sso"]})
    assert callback.status_code == 302
    assert callback.headers["location"] == "/"


# --- roles ----------------------------------------------------------------------------------------------

def test_a_viewer_reads_but_cannot_write(instance, fake):
    cookies = signed_in(fake, "u-viewer", "viewer")
    assert instance.get("/data/items.json", cookies=cookies).json()["rows"]
    assert instance.get("/data/-/query.json", params={"sql": "select count(*) from items"},
                        cookies=cookies).status_code == 200
    assert insert(instance, cookies).status_code == 403
    assert instance.get("/-/upload-csvs", cookies=cookies).status_code == 403


def test_a_role_in_the_cookie_is_never_trusted(instance, fake):
    fake.sessions["grant-forged"] = member("u-forged", "viewer")
    cookies = {"ds_actor": actor_cookie(SECRET, user_id="u-forged", grant="grant-forged", role="owner")}
    assert insert(instance, cookies).status_code == 403


def test_a_member_inserts_but_cannot_change_the_schema(instance, fake):
    cookies = signed_in(fake, "u-member", "member")
    assert insert(instance, cookies).status_code == 201
    assert instance.get("/-/upload-csvs", cookies=cookies).status_code == 200
    assert create_table(instance, "by_member", cookies).status_code == 403


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_admins_and_owners_change_the_schema(instance, fake, role):
    cookies = signed_in(fake, f"u-{role}", role)
    assert create_table(instance, f"by_{role}", cookies).status_code == 201
    assert insert(instance, cookies).status_code == 201


def test_a_grant_of_another_user_is_no_access(instance, fake):
    fake.sessions["grant-swapped"] = member("u-someone-else", "owner")
    cookies = {"ds_actor": actor_cookie(SECRET, user_id="u-swapped", grant="grant-swapped")}
    assert instance.get("/data/items.json", cookies=cookies, headers={"Accept": "application/json"}).status_code == 401


# --- revocation and an unreachable control plane --------------------------------------------------------

def test_a_revoked_grant_is_refused_within_the_interval_and_its_cookie_cleared(instance, fake):
    cookies = signed_in(fake, "u-revoked", "member")
    assert insert(instance, cookies).status_code == 201
    fake.sessions["grant-of-u-revoked"] = refused("session_ended")

    def refused_now():
        return instance.get("/data", cookies=cookies, headers={"Accept": "text/html"}).status_code == 302

    wait_for(refused_now, timeout=30, interval=0.3, message="the revoked grant to be refused")
    page = instance.get("/data", cookies=cookies, headers={"Accept": "text/html"})
    assert page.headers["location"].startswith(AUTHORIZE_URL)
    assert any(value.startswith("ds_actor=;") or value.startswith('ds_actor="";')
               for value in page.headers.get_list("set-cookie"))
    assert insert(instance, cookies).status_code == 401


def test_the_api_token_of_a_removed_member_stops_working(instance, fake):
    token = api_token(SECRET, "7001")
    headers = {"Authorization": f"Bearer {token}"}
    fake.users["7001"] = member("7001", "member")
    assert insert(instance, headers=headers).status_code == 201
    assert fake.revalidations(user="7001") >= 1
    fake.users["7001"] = refused()
    wait_for(lambda: insert(instance, headers=headers).status_code == 403, timeout=30,
             message="the removed member's token to be refused")
    assert instance.get("/data/items.json", headers=headers).status_code == 403


def test_an_api_token_of_no_user_of_the_control_plane_is_refused_not_an_outage(instance, fake):
    """`datasette create-token root --secret ...` (whoever holds the secret): the control plane answers 400."""
    headers = {"Authorization": f"Bearer {api_token(SECRET, 'root')}"}
    response = instance.get("/data/items.json", headers=headers)
    assert response.status_code == 403 and response.json()["error"] == "not_a_member"


def test_a_forged_api_token_is_refused(instance, fake):
    fake.users["7002"] = member("7002", "owner")
    headers = {"Authorization": f"Bearer {api_token('another-secret', 'u-forged-token')}"}
    assert insert(instance, headers=headers).status_code == 401
    assert fake.revalidations(user="7002") == 0


def test_an_unreachable_control_plane_fails_closed(instance, fake):
    cookies = signed_in(fake, "u-unreachable", "owner")
    fake.unreachable = True
    page = instance.get("/data", cookies=cookies, headers={"Accept": "text/html"})
    assert page.status_code == 503 and "control plane" in page.text
    assert insert(instance, cookies).status_code == 503
    assert "Traceback" not in instance.log()


# --- the cost of a request ------------------------------------------------------------------------------

def test_one_revalidation_per_grant_however_many_requests(fake, tmp_path):
    """Ten requests at once for a grant not in the cache wait for one answer; later ones need none."""
    instance = Instance(tmp_path, fake, revalidate_seconds=60)
    try:
        cookies = signed_in(fake, "u-burst", "viewer")
        fake.release = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            pending = [pool.submit(instance.get, "/data/items.json", cookies=cookies) for _ in range(10)]
            wait_for(lambda: fake.revalidations(session="grant-of-u-burst") >= 1, timeout=30,
                     message="the first revalidation")
            fake.release.set()
            assert [future.result().status_code for future in pending] == [200] * 10
        for _ in range(5):
            assert instance.get("/data/items.json", cookies=cookies).status_code == 200
        assert fake.revalidations(session="grant-of-u-burst") == 1
        assert all(request["path"] != ACTOR_PATH or request["body"] != {"session": "grant-of-u-burst"}
                   or request["authorization"] == f"Bearer {TEAM_TOKEN}" for request in fake.requests)
    finally:
        fake.release = None
        instance.stop()


PERMISSION_CHECKS = """
import asyncio, json, sys
from datasette.app import Datasette
from datasette.plugins import pm
from datasette.resources import TableResource

datasette = Datasette([], plugins_dir=sys.argv[1], default_deny=sys.argv[2] == "default-deny")
plugin = next(plugin for plugin in pm.get_plugins() if hasattr(plugin, "team_auth"))
plugin.team_auth(datasette).remember(("session", "grant-of-u-cost"), "viewer", 60)
queries = []
internal = datasette.get_internal_database()
execute = internal.execute

async def counted(sql, *args, **kwargs):
    queries.append(sql)
    return await execute(sql, *args, **kwargs)

internal.execute = counted

async def checks(actor):
    queries.clear()
    verdicts = [await datasette.allowed(action=action, resource=TableResource("data", "items"), actor=actor)
                for action in ("view-table", "view-table", "insert-row")]
    return {"verdicts": verdicts, "queries": list(queries)}

async def main():
    await datasette.invoke_startup()
    member = {"id": "u-cost", "email": "u-cost@example.com", "sso": "grant-of-u-cost"}
    print(json.dumps({"member": await checks(member), "anonymous": await checks(None)}))

asyncio.run(main())
"""


@pytest.mark.parametrize("default_deny", [True, False])
def test_a_permission_check_is_one_cached_statement_and_none_for_no_role(fake, default_deny):
    """Datasette asks the permission hooks several times a page, once more for the anonymous actor (is the page
    private?), and turns their rules into one query of its internal database per check. The roles' rules are the
    same text every time (SQLite's statement cache compiles them once; PermissionSQL.allow names a new parameter
    per call, so every check was new text to compile), and under --default-deny (as the entrypoint serves) an actor
    without a role adds no rule (nothing allows it anyway); without it, an explicit deny beats the default allow."""
    env = {"PATH": f"{INSTANCE_PYTHON.parent}:/usr/bin:/bin", "DATASETTE_SECRET": SECRET, "CLOUDCTL_TEAM_ID": TEAM_ID,
           "CLOUDCTL_TEAM_URL": "http://127.0.0.1:9/", "CLOUDCTL_SSO_AUTHORIZE_URL": AUTHORIZE_URL,
           "CLOUDCTL_URL": fake.url, "CLOUDCTL_TOKEN": TEAM_TOKEN}
    result = subprocess.run([str(INSTANCE_PYTHON), "-c", PERMISSION_CHECKS, str(INSTANCE_DIR / "plugins"),
                             "default-deny" if default_deny else "default-allow"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    checks = json.loads(result.stdout.strip().splitlines()[-1])
    # A viewer may view, not insert (a rule only for what the role has); no role: nothing.
    assert checks["member"]["verdicts"] == [True, True, False]
    assert checks["anonymous"]["verdicts"] == [False, False, False]
    if not default_deny:
        # The deny is what beats Datasette's default allow (whose own rule is new text at every check).
        assert any("no current role" in query for query in checks["anonymous"]["queries"])
        return
    # The same statement each time; nothing of the plugin's for no role (Datasette's own rule for SQLite's
    # statistics tables stays: the bare Datasette runs it too).
    assert len(checks["member"]["queries"]) == 2 and len(set(checks["member"]["queries"])) == 1
    assert len(set(checks["anonymous"]["queries"])) == 1
    assert not any("no current role" in query for query in checks["anonymous"]["queries"])
