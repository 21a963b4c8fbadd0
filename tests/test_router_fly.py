"""The Fly router end to end against the faithful fake: Fly's proxy (fakefly/proxy.py) in front of the real router
process in Fly mode (`python -m router.server --mode fly`, reading this test's database), team apps provisioned
by the real Fly backend on the fake, each team's Machine bound to a stand-in running the REAL router guard
(instance/plugins/router_guard.py) configured from what the fake holds for that Machine (its app's secrets, its
env): one test runs a real Datasette with the plugin.

Layouts (routing-sso-restore.md §1.4): `two-org`, the recommended one (the router in the control plane's org,
teams in a tenants' org that lists it in replay-sources); `single-org` with cross-network replays enabled (each
team app has its own network, so the router can replay only that way); `single-org-isolated`, cross-network
replays off: the router cannot replay at all (asserted, so nobody deploys it).
Isolation is judged twice: what Fly's proxy delivered to each app (`proxy.served_by`) and what each team's guard
let through (the stand-ins' records): 0 requests served by the wrong team.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn

from cloudctl.processes import stop_process_group
from fakefly import FakeFly, Latencies
from fakefly.proxy import FlyProxy
from flyapi import FlyClient, RateLimiter
from instances.machines import get_backend
from instances.models import Instance
from instances.provisioning import provision
from teams.models import Team
from teams.routing import HOSTNAME_VARIABLE, ROUTING_SECRET_VARIABLE, routing_secret

from .database import database_url
from .instance_sso import TESTER, FakeSSO, as_tester, member
from .routing import REPO, free_port, start_router

sys.path.insert(0, str(REPO / "instance" / "plugins"))
import router_guard  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]  # real router processes

DOMAIN = "teams.example"
BACKEND = "instances.backends.fly.FlyBackend"
ROUTER_APP = "cloudctl-router"
ROUTER_NETWORK = "router-net"
IMAGE = "registry.fly.io/cloudctl-team:v1"
# Wall time (Fly's proxy is real HTTP): a start takes long enough that a request visibly waits for it.
FAST = Latencies(create_app=0, create_volume=0, set_secrets=0, create_machine=0, start=0.3, stop=0.05,
                 update=0.05, destroy=0, delete_app=0, org_listing_lag=0, secrets_propagation=0,
                 certificate_issue=0)
ROUTER_SERVICE = {"protocol": "tcp", "internal_port": 8080, "autostart": True, "autostop": "off",
                  "min_machines_running": 1,
                  "ports": [{"port": 80, "handlers": ["http"]}, {"port": 443, "handlers": ["tls", "http"]}]}
LAYOUTS = {
    # (orgs, the router's org, the teams' org, cross-network replays in the teams' org)
    "two-org": (("control", "tenants"), "control", "tenants", False),
    "single-org": (("acme",), "acme", "acme", True),
    "single-org-isolated": (("acme",), "acme", "acme", False),
}


class GuardedTeam:
    """A team's Machine: the real guard (`router_guard.guard`) around a tiny ASGI app, under uvicorn on 127.0.0.1,
    configured with what the Machine would boot with. Records each request the guard let through; `respond`
    lets a test play a hostile tenant (its own instance, so it answers whatever it likes)."""

    def __init__(self, slug: str, *, secret: str, hostname: str):
        self.slug = slug
        self.accepted: list[dict] = []
        self.respond = None
        self.port = free_port()
        app = router_guard.guard(self._inner, secret=secret, hostname=hostname, health_path="/-/versions.json")
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _inner(self, scope, receive, send):
        length = 0
        while True:
            message = await receive()
            length += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"]]
        self.accepted.append({"path": scope["path"], "headers": headers, "length": length})
        status, response_headers, body = (self.respond(scope["path"]) if self.respond else None) or (
            200, [(b"content-type", b"application/json")], json.dumps({"team": self.slug, "length": length}).encode())
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    def close(self):
        self.server.should_exit = True
        self.thread.join()


@dataclass
class FlyWorld:
    layout: str
    fake: FakeFly
    client: FlyClient
    proxy: FlyProxy
    tmp_path: object
    settings: object
    teams: dict = field(default_factory=dict)       # slug -> Team
    machines: dict = field(default_factory=dict)    # slug -> GuardedTeam
    router: subprocess.Popen | None = None

    # --- the topology ------------------------------------------------------------------------------------

    def team(self, slug: str) -> Team:
        """Created and provisioned by the real Fly backend on the fake; its Machine bound to a guarded stand-in
        configured from the fake's records: the app's secrets and the Machine's env."""
        from instances.services import create_team_and_provision

        team = create_team_and_provision(slug)
        instance = provision(team, actor="test")
        assert instance.state == Instance.State.RUNNING, instance.last_error
        app, machine = instance.resources["app"], instance.resources["machine"]
        secrets = {name: secret.value for name, secret in self.fake.apps[app].secrets.items()}
        env = self.fake.machine(machine).config["env"]
        self.machines[slug] = GuardedTeam(slug, secret=secrets[ROUTING_SECRET_VARIABLE],
                                          hostname=env[HOSTNAME_VARIABLE])
        self.proxy.bind(app, machine, self.machines[slug].url)
        self.teams[slug] = team
        return team

    def resources(self, slug: str) -> dict:
        return Instance.objects.get(team=self.teams[slug]).resources

    def app(self, slug: str) -> str:
        return self.resources(slug)["app"]

    def start_router(self, *, fly_upstream: str = "http://{machine}.vm.{app}.internal:8080/") -> None:
        """The router app (the wildcard certificate, a shared IPv4) whose Machine is the real router process in
        Fly mode on this test's database."""
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CLOUDCTL_"))}
        env.update({"DJANGO_SETTINGS_MODULE": "cloudctl.settings",
                    "DATABASE_URL": database_url(),
                    "CLOUDCTL_STATE_DIR": str(self.tmp_path / "state"),
                    "CLOUDCTL_TOKEN_KEYS": ",".join(self.settings.TOKEN_KEYS),
                    "CLOUDCTL_ROUTER_KEY": self.settings.ROUTER_KEY, "CLOUDCTL_TEAMS_DOMAIN": DOMAIN,
                    "CLOUDCTL_ROUTER_WAKE_TIMEOUT": "10", "CLOUDCTL_ROUTER_FLY_UPSTREAM": fly_upstream})
        self.router = start_router(env, port, mode="fly")
        machine = self.client.create_machine(ROUTER_APP, name="router", region="ord",
                                             config={"image": IMAGE, "services": [ROUTER_SERVICE]})
        self.client.wait(ROUTER_APP, machine.id, "started", timeout=30)
        self.proxy.bind(ROUTER_APP, machine.id, f"http://127.0.0.1:{port}")

    # --- a client on the internet -------------------------------------------------------------------------

    def get(self, slug_or_host: str, path: str = "/", **options) -> httpx.Response:
        """As a browser at https://<slug>.<domain>/ asks: to Fly's edge on 443 (TLS taken as done)."""
        host = slug_or_host if "." in slug_or_host else f"{slug_or_host}.{DOMAIN}"
        headers = {"Host": host, **options.pop("headers", {})}
        return httpx.request(options.pop("method", "GET"), self.proxy.url(443) + path, headers=headers,
                             timeout=60, **options)

    def raw(self, request: bytes) -> bytes:
        """Bytes as sent, to the edge's 443 listener: request forms httpx will not write."""
        port = int(self.proxy.url(443).rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer

    def accepted_by(self) -> dict[str, int]:
        return {slug: len(machine.accepted) for slug, machine in self.machines.items()}

    def delivered_to(self) -> dict[str, int]:
        return {slug: len(self.proxy.served_by(self.app(slug))) for slug in self.teams}


def make_world(layout, settings, monkeypatch, tmp_path) -> FlyWorld:
    orgs, router_org, teams_org, cross_network = LAYOUTS[layout]
    fake = FakeFly(orgs=orgs, latencies=FAST, rate_limits=False)
    if router_org != teams_org:
        fake.allow_replay_source(teams_org, router_org)   # fly orgs replay-sources add --org tenants control
    fake.enable_cross_network_replays(teams_org, cross_network)
    client = FlyClient(token="fly-token", transport=fake.transport(), limiter=RateLimiter.unlimited())
    monkeypatch.setattr("instances.backends.fly.make_client", lambda api_url, api_token: client)
    settings.MACHINE_BACKEND, settings.FLY_ORG, settings.INSTANCE_IMAGE = BACKEND, teams_org, IMAGE
    settings.TEAMS_DOMAIN = DOMAIN
    get_backend.cache_clear()
    client.create_app(ROUTER_APP, router_org, network=ROUTER_NETWORK)
    client.assign_ip(ROUTER_APP, "shared_v4")
    client.request_certificate(ROUTER_APP, f"*.{DOMAIN}")
    return FlyWorld(layout, fake, client, FlyProxy(fake).start(), tmp_path, settings)


@pytest.fixture(params=["two-org", "single-org"])
def world(request, settings, monkeypatch, tmp_path):
    """The production topology in a layout the router works in, with teams alpha and beta."""
    world = make_world(request.param, settings, monkeypatch, tmp_path)
    world.team("alpha")
    world.team("beta")
    yield world
    close(world)


def close(world: FlyWorld) -> None:
    if world.router is not None:
        stop_process_group(world.router)
    world.proxy.stop()
    for machine in world.machines.values():
        machine.close()
    get_backend.cache_clear()


def header(record: dict, name: str) -> list[str]:
    return [value for key, value in record["headers"] if key == name]


# --- reaching a team -------------------------------------------------------------------------------------

def test_a_browser_reaches_its_team_through_a_replay_the_guard_accepts(world):
    world.start_router()
    answer = world.get("alpha", "/data?sql=select+1", headers={"Cookie": "sessionid=control-plane; ds_actor=a"})

    assert answer.status_code == 200 and answer.json() == {"team": "alpha", "length": 0}
    [record] = world.machines["alpha"].accepted
    assert record["path"] == "/data"
    assert header(record, "host") == [f"alpha.{DOMAIN}"]
    [source] = header(record, "fly-replay-src")
    assert router_guard.replay_state(source) == routing_secret(world.teams["alpha"].pk)  # the router's state
    assert header(record, "cookie") == []  # the control plane's cookie never reaches a tenant
    [delivery] = world.proxy.served_by(world.app("alpha"))
    assert delivery.kind == "replay"
    assert [d.kind for d in world.proxy.served_by(ROUTER_APP)] == ["direct"]
    assert world.accepted_by() == {"alpha": 1, "beta": 0} and world.delivered_to() == {"alpha": 1, "beta": 0}


def test_team_apps_get_no_ip_at_all(world):
    """Only the router app is reachable from the internet: the Fly backend allocates no address to a team app."""
    for slug in world.teams:
        assert world.client.list_ip_assignments(world.app(slug)) == []
        assert world.fake.app_for_hostname(f"{world.app(slug)}.fly.dev") is None
    world.start_router()
    # A team app's own name answers nothing: no public IP, so Fly's edge does not know it.
    assert world.get(f"{world.app('beta')}.fly.dev").status_code == 404
    assert world.delivered_to() == {"alpha": 0, "beta": 0}


def test_a_single_org_without_cross_network_replays_routes_nothing(settings, monkeypatch, tmp_path):
    """Each team app is on its own network: in one org the router's replays need cross-network replays on
    (which lets tenants replay into each other's apps too: the guards stop that, below)."""
    world = make_world("single-org-isolated", settings, monkeypatch, tmp_path)
    try:
        world.team("alpha")
        world.start_router()
        answer = world.get("alpha")
        assert answer.status_code == 502
        assert [refusal.reason for refusal in world.proxy.refused] == ["cross_network"]
        assert world.accepted_by() == {"alpha": 0} and world.delivered_to() == {"alpha": 0}
    finally:
        close(world)


def start_datasette(world: FlyWorld, slug: str, tmp_path, sso: FakeSSO) -> tuple[subprocess.Popen, str]:
    """The team's Machine as a real Datasette loading the instance's plugins, configured as the Machine boots: the
    routing secret from the app's secrets, the name from its env; sign-in through `sso`, which confirms the tester
    (`as_tester`). Its one database names the team."""
    resources = world.resources(slug)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CLOUDCTL_"))}
    env[ROUTING_SECRET_VARIABLE] = world.fake.apps[resources["app"]].secrets[ROUTING_SECRET_VARIABLE].value
    env[HOSTNAME_VARIABLE] = world.fake.machine(resources["machine"]).config["env"][HOSTNAME_VARIABLE]
    (tmp_path / ".cloudctl").mkdir(exist_ok=True)
    (tmp_path / ".cloudctl" / "datasette-secret").write_text(f"datasette-secret-of-{slug}")
    env.update({"DATASETTE_SECRET": f"datasette-secret-of-{slug}", "CLOUDCTL_TEAM_ID": str(world.teams[slug].pk),
                "CLOUDCTL_TEAM_URL": f"https://{env[HOSTNAME_VARIABLE]}/", "CLOUDCTL_URL": sso.url,
                "CLOUDCTL_SSO_AUTHORIZE_URL": "https://cloudctl.example.com/sso/authorize", "CLOUDCTL_TOKEN": "t"})
    database = tmp_path / f"{slug}_marker.db"
    sqlite3.connect(database).close()
    port = free_port()
    command = [str(REPO / ".venv-instance" / "bin" / "python"), "-m", "datasette", "serve", str(database),
               "--port", str(port), "--plugins-dir", str(REPO / "instance" / "plugins")]
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/-/versions.json", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        stop_process_group(process)
        raise RuntimeError("Datasette did not answer in time")
    world.proxy.bind(resources["app"], resources["machine"], f"http://127.0.0.1:{port}")
    return process, f"http://127.0.0.1:{port}"


@pytest.mark.skipif(not (REPO / ".venv-instance" / "bin" / "python").exists(), reason="needs the instance venv")
def test_a_real_datasette_behind_the_guard_serves_its_router_only(settings, monkeypatch, tmp_path):
    world = make_world("two-org", settings, monkeypatch, tmp_path)
    datasette = None
    sso = FakeSSO(team_token="t", everyone=member(TESTER, "viewer")).__enter__()
    try:
        world.team("alpha")
        world.team("beta")
        datasette, datasette_url = start_datasette(world, "alpha", tmp_path, sso)
        world.start_router()

        page = world.get("alpha", "/-/databases.json", headers=as_tester(tmp_path))
        spoofed = world.get("alpha", "/-/databases.json", headers={
            "fly-replay-src": f"state={routing_secret(world.teams['alpha'].pk)}"})
        from_beta = world.get("beta")

        assert page.status_code == 200 and "alpha_marker" in page.text, page.text[:300]
        assert spoofed.status_code == 403  # not routed by the router
        assert from_beta.json()["team"] == "beta"
        assert [delivery.kind for delivery in world.proxy.served_by(world.app("alpha"))] == ["replay"]
        # Straight at the Machine (as if Fly's proxy replayed it) with its own secret but the client's forged
        # header beside Fly's: the guard refuses two.
        secret = routing_secret(world.teams["alpha"].pk)
        doubled = httpx.get(f"{datasette_url}/-/databases.json", headers=[
            ("Host", f"alpha.{DOMAIN}"), ("fly-replay-src", "state=forged"), ("fly-replay-src", f"state={secret}")])
        assert doubled.status_code == 403
    finally:
        if datasette is not None:
            stop_process_group(datasette)
        sso.__exit__(None, None, None)
        close(world)


# --- isolation, fuzzed --------------------------------------------------------------------------------------

def host_tricks(world: FlyWorld) -> list[tuple[str, bytes, str | None, bool]]:
    """(name, raw request, the one team Fly may deliver it to, whether that team's guard lets it through).
    Requests from alpha's side aimed at beta."""
    beta_secret = routing_secret(world.teams["beta"].pk)
    alpha, beta = f"alpha.{DOMAIN}", f"beta.{DOMAIN}"

    def request(target: str, *headers: str) -> bytes:
        return (f"GET {target} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in headers)
                + "Connection: close\r\n\r\n").encode("utf-8")

    return [
        ("absolute-form", request(f"http://{beta}/", f"Host: {alpha}"), "alpha", True),
        ("absolute-form https", request(f"https://{beta}:443/data", f"Host: {alpha}"), "alpha", True),
        ("x-forwarded-host", request("/", f"Host: {alpha}", f"X-Forwarded-Host: {beta}"), "alpha", True),
        ("forwarded", request("/", f"Host: {alpha}", f"Forwarded: host={beta}"), "alpha", True),
        ("port", request("/", f"Host: {alpha}:8443"), "alpha", True),
        ("trailing dot", request("/", f"Host: {alpha}."), "alpha", True),
        ("mixed case", request("/", f"Host: ALPHA.Teams.Example"), "alpha", True),
        ("two trailing dots", request("/", f"Host: {beta}.."), None, False),
        ("idn look-alike", request("/", f"Host: b\u0435ta.{DOMAIN}"), None, False),  # Cyrillic e
        ("punycode look-alike", request("/", f"Host: xn--bta-eod.{DOMAIN}"), None, False),
        ("two hosts", request("/", f"Host: {alpha}", f"Host: {beta}"), None, False),
        ("authority", request("/", f"Host: {alpha}", f":authority: {beta}"), "alpha", True),
        ("userinfo", request("/", f"Host: {beta}@{alpha}"), None, False),
        ("deeper name", request("/", f"Host: {beta}.{alpha}"), None, False),
        ("the team app's own name", request("/", f"Host: {world.app('beta')}.fly.dev"), None, False),
        # The router routes no request carrying fly-replay-src (were it routed, Fly keeps the client's own, the
        # fake's worst case, and the team would see two and refuse).
        ("spoofed fly-replay-src", request("/", f"Host: {alpha}", f"fly-replay-src: state={beta_secret}"),
         None, False),
        ("spoofed src for beta's name", request("/", f"Host: {beta}", f"fly-replay-src: state={beta_secret}"),
         None, False),
        ("a client's fly-replay", request("/", f"Host: {alpha}", f"fly-replay: app={world.app('beta')}"),
         "alpha", True),
    ]


def test_host_tricks_are_never_served_by_the_wrong_team(world):
    world.start_router()
    wrong = []
    for name, raw, routed_to, served in host_tricks(world):
        accepted, delivered = world.accepted_by(), world.delivered_to()
        answer = world.raw(raw)
        for slug in world.teams:
            gained = world.accepted_by()[slug] - accepted[slug]
            reached = world.delivered_to()[slug] - delivered[slug]
            if slug != routed_to and (gained or reached):
                wrong.append((name, f"reached {slug}", gained, reached, answer[:80]))
            if slug == routed_to and (reached, gained) != (1, int(served)):
                wrong.append((name, f"{slug} delivered {reached}, served {gained}", answer[:80]))
        if not served:
            assert b'"team"' not in answer, name
    assert wrong == []


# --- a hostile tenant ---------------------------------------------------------------------------------------

def test_a_tenant_replaying_elsewhere_reaches_no_other_team(world):
    """alpha's instance is the tenant's own code: it answers with replays to beta's app (both forms, any state it
    can make up) and to the router app with beta's name set (hoping the router routes it to beta with beta's
    secret). Two orgs: Fly's proxy refuses them all (tenants' networks; the control org takes no replays from
    tenants); one org with cross-network replays: they land, and beta's guard refuses every one."""
    beta_app, beta_machine = world.app("beta"), world.resources("beta")["machine"]
    alpha_secret = routing_secret(world.teams["alpha"].pk)
    replays = {
        "/header": (200, [(b"fly-replay", f"app={beta_app};instance={beta_machine};state={alpha_secret}".encode())],
                    b""),
        "/header-no-state": (200, [(b"fly-replay", f"app={beta_app}".encode())], b""),
        "/json": (200, [(b"content-type", b"application/vnd.fly.replay+json")],
                  json.dumps({"app": beta_app, "state": "made-up",
                              "transform": {"set_headers": [{"name": "Host", "value": f"beta.{DOMAIN}"}]}}).encode()),
        "/via-router": (200, [(b"content-type", b"application/vnd.fly.replay+json")],
                        json.dumps({"app": ROUTER_APP, "transform": {
                            "set_headers": [{"name": "Host", "value": f"beta.{DOMAIN}"}]}}).encode()),
    }
    world.machines["alpha"].respond = lambda path: replays.get(path)
    world.start_router()

    answers = {path: world.get("alpha", path) for path in replays}

    assert world.machines["beta"].accepted == []
    assert all(b'"beta"' not in answer.content for answer in answers.values())
    refusals = {refusal.reason for refusal in world.proxy.refused}
    if world.layout == "two-org":
        assert world.delivered_to()["beta"] == 0
        assert refusals == {"cross_network", "cross_org"}
    else:
        assert world.delivered_to()["beta"] > 0  # delivered by Fly, refused by beta's guard
        assert all(answer.status_code in (403, 502) for answer in answers.values())


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_tenant_replaying_a_request_the_router_carried_reaches_no_other_team(layout, settings, monkeypatch,
                                                                                tmp_path):
    """The router's own path (a body over 1 MB, over Flycast) reaches the tenant in every layout, the one where Fly
    cannot replay from the router included: the tenant answers it with a replay to beta. (A smaller body, even a
    chunked one, reaches the router with its length, as Fly's edge reads it whole: it is replayed.)"""
    world = make_world(layout, settings, monkeypatch, tmp_path)
    try:
        world.team("alpha")
        world.team("beta")
        alpha_app, beta_app = world.app("alpha"), world.app("beta")
        world.client.assign_ip(alpha_app, "private_v6", network=ROUTER_NETWORK)
        world.machines["alpha"].respond = lambda path: (200, [(b"fly-replay", f"app={beta_app}".encode())], b"")
        world.start_router(fly_upstream=world.proxy.flycast_url(ROUTER_NETWORK, alpha_app))

        answer = world.get("alpha", "/data/-/upload", method="POST", content=b"y" * 2_000_000)

        assert [record["length"] for record in world.machines["alpha"].accepted] == [2_000_000]
        assert [delivery.kind for delivery in world.proxy.served_by(alpha_app)] == ["direct"]  # over Flycast
        assert answer.status_code == 502 and b'"beta"' not in answer.content
        assert world.accepted_by()["beta"] == 0 and world.delivered_to()["beta"] == 0
        assert [refusal.reason for refusal in world.proxy.refused] == ["body_too_large"]
    finally:
        close(world)


def test_the_router_vouches_for_no_request_a_tenant_replayed_to_it(settings, monkeypatch, tmp_path):
    """One org with cross-network replays: alpha's instance replays its visitor's request into the router app,
    naming beta. The router must not answer it with a replay carrying beta's routing secret (whatever Fly then
    does with the headers of a chained replay, which is undocumented): a request that reaches the router with a
    `fly-replay-src` was replayed by an app (a tenant) or forged by a client, never sent by Fly's edge."""
    world = make_world("single-org", settings, monkeypatch, tmp_path)
    try:
        world.team("alpha")
        world.team("beta")
        world.machines["alpha"].respond = lambda path: (200, [(b"content-type", b"application/vnd.fly.replay+json")],
                                                        json.dumps({"app": ROUTER_APP, "transform": {"set_headers": [
                                                            {"name": "Host", "value": f"beta.{DOMAIN}"}]}}).encode())
        world.start_router()

        answer = world.get("alpha", "/launder")

        assert answer.status_code == 403
        assert [delivery.kind for delivery in world.proxy.served_by(ROUTER_APP)] == ["direct", "replay"]
        assert world.delivered_to()["beta"] == 0 and world.accepted_by()["beta"] == 0
    finally:
        close(world)


# --- wake, suspension, large bodies ---------------------------------------------------------------------------

def stop_machine(world: FlyWorld, slug: str) -> None:
    instance = Instance.objects.get(team=world.teams[slug])
    get_backend(BACKEND).stop(instance)
    assert world.fake.machine(instance.resources["machine"]).state == "stopped"


def test_a_stopped_machine_is_started_by_the_replay_and_answers(world):
    stop_machine(world, "alpha")
    world.start_router()

    answer = world.get("alpha")

    assert answer.status_code == 200 and answer.json()["team"] == "alpha"
    assert world.fake.machine(world.resources("alpha")["machine"]).state == "started"
    assert world.accepted_by() == {"alpha": 1, "beta": 0}


def test_a_suspended_teams_machine_is_never_started(world):
    stop_machine(world, "beta")
    Team.objects.filter(pk=world.teams["beta"].pk).update(status=Team.Status.DISABLED)
    world.start_router()

    answer = world.get("beta")

    upload = world.get("beta", "/data/-/upload", method="POST", content=b"x" * 3_000_000)  # not replayable

    assert answer.status_code == 403 and "suspended" in answer.text
    assert upload.status_code == 403 and "suspended" in upload.text
    assert world.fake.machine(world.resources("beta")["machine"]).state == "stopped"
    assert world.delivered_to()["beta"] == 0 and world.accepted_by()["beta"] == 0


@pytest.mark.parametrize("size", [3_000_000, 200_000_000])
def test_a_large_upload_reaches_its_team_over_flycast(world, size):
    """Fly replays no body over 1 MB: the router carries it, streaming, to the team app's Flycast address in the
    router's network (allocated here as an operator would: the backend does not allocate it yet), where Fly's
    proxy starts the stopped Machine."""
    alpha_app = world.app("alpha")
    world.client.assign_ip(alpha_app, "private_v6", network=ROUTER_NETWORK)
    stop_machine(world, "alpha")
    world.start_router(fly_upstream=world.proxy.flycast_url(ROUTER_NETWORK, alpha_app))

    answer = world.get("alpha", "/data/-/upload", method="POST", content=b"x" * size)

    assert answer.status_code == 200 and answer.json() == {"team": "alpha", "length": size}
    [record] = world.machines["alpha"].accepted
    assert header(record, "host") == [f"alpha.{DOMAIN}"]
    assert router_guard.replay_state(header(record, "fly-replay-src")[0]) == routing_secret(world.teams["alpha"].pk)
    assert [delivery.kind for delivery in world.proxy.served_by(alpha_app)] == ["direct"]  # over Flycast
    assert world.accepted_by()["beta"] == 0 and world.delivered_to()["beta"] == 0
