"""fakefly's Fly proxy: hostname routing, fly-replay (header and JSON forms) under Fly's org and network rules,
the 1 MB limit, autostart on replay, timeouts and fallbacks, against tiny HTTP servers standing in for Machines."""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from fakefly import FakeFly, Latencies
from fakefly.proxy import MAX_REPLAY_BODY, FlyProxy, parse_replay_header, parse_replay_json

IMAGE = "registry.fly.io/cloudctl-team:v1"
WILDCARD = "*.teams.example"
HOST = {"Host": "acme.teams.example"}
# Every Machine here serves 80 and 443, as Fly's replay port rule needs (routing-sso-restore.md §1.3).
WEB = {"protocol": "tcp", "internal_port": 8080, "autostart": True, "autostop": "stop", "min_machines_running": 0,
       "ports": [{"port": 80, "handlers": ["http"]}, {"port": 443, "handlers": ["tls", "http"]}]}
FAST = Latencies(create_app=0, create_volume=0, set_secrets=0, create_machine=0, start=0.05, stop=0.05,
                 update=0.05, destroy=0, delete_app=0, org_listing_lag=0, secrets_propagation=0,
                 certificate_issue=0)


class Upstream:
    """An HTTP server standing in for a Machine: records every request, answers with `respond(request)`."""

    def __init__(self, respond: Callable[[dict], tuple[int, dict, bytes]] | None = None, name: str = "machine"):
        self.requests: list[dict] = []
        self.respond = respond or (lambda request: (200, {"Content-Type": "text/plain"}, name.encode()))
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def __getattr__(self, attribute):
                if attribute.startswith("do_"):
                    return self._answer
                raise AttributeError(attribute)

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = {"method": self.command, "path": self.path, "headers": list(self.headers.items()),
                           "body": body}
                upstream.requests.append(request)
                status, headers, answer = upstream.respond(request)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def header_values(request: dict, name: str) -> list[str]:
    return [value for key, value in request["headers"] if key.lower() == name]


def replay_to(target: str) -> Callable[[dict], tuple[int, dict, bytes]]:
    """A router that answers every request with `fly-replay: <target>` (a fallback request it serves itself)."""
    def respond(request):
        if header_values(request, "fly-replay-failed"):
            return 200, {}, b"router fallback page"
        return 200, {"fly-replay": target}, b"ignored"
    return respond


class World:
    """A FakeFly on wall time with its proxy; apps, Machines and their stand-in servers made through the API."""

    def __init__(self, orgs=("acme",)):
        self.fake = FakeFly(orgs=orgs, latencies=FAST, rate_limits=False)
        self.http = httpx.Client(base_url="https://api.machines.dev/v1", transport=self.fake.transport(),
                                 headers={"Authorization": "Bearer t"})
        self.proxy = FlyProxy(self.fake).start()
        self.upstreams: list[Upstream] = []

    def app(self, name, *, org="acme", network=None, hostname=None):
        body = {"name": name, "org_slug": org} | ({"network": network} if network else {})
        assert self.http.post("/apps", json=body).status_code == 201
        if hostname:
            assert self.http.post(f"/apps/{name}/ip_assignments", json={"type": "shared_v4"}).status_code == 200
            assert self.http.post(f"/apps/{name}/certificates/acme", json={"hostname": hostname}).status_code == 201
        return name

    def machine(self, app, respond=None, *, services=(WEB,), region="ord"):
        """A started Machine of `app` whose traffic goes to a new stand-in server answering `respond`."""
        response = self.http.post(f"/apps/{app}/machines", json={
            "region": region, "config": {"image": IMAGE, "services": list(services)}})
        assert response.status_code == 200, response.text
        machine_id = response.json()["id"]
        assert self.http.get(f"/apps/{app}/machines/{machine_id}/wait", params={"state": "started"}).status_code == 200
        upstream = Upstream(respond, name=f"{app}/{machine_id}")
        self.upstreams.append(upstream)
        self.proxy.bind(app, machine_id, upstream.url)
        return machine_id, upstream

    def stop_machine(self, app, machine_id):
        version = self.http.get(f"/apps/{app}/machines/{machine_id}").json()["instance_id"]
        self.http.post(f"/apps/{app}/machines/{machine_id}/stop")
        self.http.get(f"/apps/{app}/machines/{machine_id}/wait", params={"state": "stopped", "version": version})

    def get(self, path="/", *, port=443, headers=HOST, **options):
        return httpx.request(options.pop("method", "GET"), self.proxy.url(port) + path, headers=headers,
                             timeout=30, **options)

    def close(self):
        self.proxy.stop()
        for upstream in self.upstreams:
            upstream.close()
        self.http.close()


@pytest.fixture
def world():
    world = World()
    yield world
    world.close()


def test_a_hostname_reaches_the_app_holding_its_certificate_and_ip_with_fly_headers(world):
    world.app("router", hostname=WILDCARD)
    router_machine, router = world.machine("router")
    world.app("team-a")
    world.machine("team-a")

    response = world.get("/db?x=1", headers=HOST | {"Fly-Client-IP": "6.6.6.6", "X-Forwarded-For": "10.0.0.1"})

    assert response.status_code == 200 and response.text == f"router/{router_machine}"
    [request] = router.requests
    assert request["path"] == "/db?x=1"
    assert header_values(request, "fly-forwarded-port") == ["443"]
    assert header_values(request, "x-forwarded-proto") == ["https"]
    assert header_values(request, "fly-client-ip") == ["127.0.0.1"]  # the edge's, not the client's claim
    assert header_values(request, "x-forwarded-for") == ["10.0.0.1, 127.0.0.1"]
    [delivery] = world.proxy.served
    assert (delivery.app, delivery.machine_id, delivery.kind, delivery.port) == (
        "router", router_machine, "direct", 443)
    assert delivery.header("host") == "acme.teams.example"

    # A name nobody holds, one label too deep for the wildcard, and a team app (no IPs) by its fly.dev name.
    for host in ("acme.elsewhere.example", "a.b.teams.example", "team-a.fly.dev"):
        assert world.get(headers={"Host": host}).status_code == 404, host
    assert [refusal.reason for refusal in world.proxy.refused] == ["unknown_host"] * 3
    assert len(router.requests) == 1


def test_force_https_redirects_at_the_edge_before_any_machine(world):
    world.app("router", hostname=WILDCARD)
    _, router = world.machine("router", services=[{**WEB, "ports": [
        {"port": 80, "handlers": ["http"], "force_https": True}, {"port": 443, "handlers": ["tls", "http"]}]}])

    response = world.get("/db?x=1", port=80)

    assert response.status_code == 301 and response.headers["location"] == "https://acme.teams.example/db?x=1"
    assert router.requests == []
    assert world.get("/db", port=443).status_code == 200


def test_requests_are_shared_between_the_apps_started_machines(world):
    world.app("router", hostname=WILDCARD)
    first, _ = world.machine("router")
    second, _ = world.machine("router")

    answers = {world.get().text for _ in range(4)}

    assert answers == {f"router/{first}", f"router/{second}"}


@pytest.mark.parametrize("separator", [";", ","])
def test_a_header_replay_carries_the_original_request_and_fly_replay_src(world, separator):
    world.app("router", hostname=WILDCARD)
    team_machine, team = world.machine(world.app("team-a"))
    router_machine, router = world.machine(
        "router", replay_to(f"app=team-a{separator}instance={team_machine}{separator}state=psk-a"))

    response = world.get("/upload?x=1", method="POST", content=b"a,b\n1,2\n",
                         headers=HOST | {"Cookie": "session=1", "Content-Type": "text/csv"})

    assert response.status_code == 200 and response.text == f"team-a/{team_machine}"
    assert "fly-replay" not in response.headers
    [replayed] = team.requests
    assert (replayed["method"], replayed["path"], replayed["body"]) == ("POST", "/upload?x=1", b"a,b\n1,2\n")
    assert header_values(replayed, "cookie") == ["session=1"]
    assert header_values(replayed, "host") == ["acme.teams.example"]
    [source] = header_values(replayed, "fly-replay-src")
    fields = dict(part.split("=", 1) for part in source.split(";"))
    assert (fields["instance"], fields["region"], fields["state"]) == (router_machine, "ord", "psk-a")
    assert abs(int(fields["t"]) / 1e6 - world.fake.clock.now()) < 60
    assert [delivery.kind for delivery in world.proxy.served] == ["direct", "replay"]
    assert len(router.requests) == 1


def test_the_json_form_transforms_the_replayed_request(world):
    world.app("router", hostname=WILDCARD)
    team_machine, team = world.machine(world.app("team-a"))
    instruction = {"app": "team-a", "instance": team_machine, "state": "psk-a",
                   "transform": {"path": "/-/rewritten?y=2", "delete_headers": ["cookie", "Authorization"],
                                 "set_headers": [{"name": "x-cloudctl-team", "value": "a"}]}}
    world.machine("router", lambda request: (200, {"Content-Type": "application/vnd.fly.replay+json"},
                                             json.dumps(instruction).encode()))

    response = world.get("/original", headers=HOST | {"Cookie": "csrftoken=x", "Authorization": "Bearer y",
                                                      "X-Kept": "1"})

    assert response.status_code == 200
    [replayed] = team.requests
    assert replayed["path"] == "/-/rewritten?y=2"
    assert header_values(replayed, "cookie") == [] and header_values(replayed, "authorization") == []
    assert header_values(replayed, "x-cloudctl-team") == ["a"] and header_values(replayed, "x-kept") == ["1"]
    assert header_values(replayed, "fly-replay-src")[0].endswith(";state=psk-a")


def test_a_clients_own_fly_replay_src_is_passed_on_and_the_proxys_follows_it(world):
    world.app("router", hostname=WILDCARD)
    _, team = world.machine(world.app("team-a"))
    world.machine("router", replay_to("app=team-a;state=real"))

    world.get(headers=HOST | {"fly-replay-src": "instance=forged;state=guess"})

    forged, real = header_values(team.requests[0], "fly-replay-src")
    assert forged == "instance=forged;state=guess" and real.endswith(";state=real")


def test_replays_across_custom_networks_are_refused_until_the_org_enables_them(world):
    world.app("router", network="router-net", hostname=WILDCARD)
    _, team = world.machine(world.app("team-a", network="team-a-net"))
    world.machine("router", replay_to("app=team-a;state=psk-a"))

    refused = world.get()

    assert refused.status_code == 502 and "cross-network" in refused.text
    assert team.requests == []
    [refusal] = world.proxy.refused
    assert (refusal.reason, refusal.source_app, refusal.replay.app) == ("cross_network", "router", "team-a")

    world.fake.enable_cross_network_replays("acme")
    assert world.get().status_code == 200 and len(team.requests) == 1


def test_cross_org_replays_need_the_target_orgs_allowlist_whatever_the_networks():
    world = World(orgs=("control", "tenants"))
    try:
        world.app("router", org="control", network="router-net", hostname=WILDCARD)
        _, team = world.machine(world.app("team-a", org="tenants", network="team-a-net"))
        world.machine("router", replay_to("app=team-a;state=psk-a"))

        assert world.get().status_code == 502 and team.requests == []
        world.fake.allow_replay_source("control", "tenants")  # the wrong way round changes nothing
        assert world.get().status_code == 502
        assert [refusal.reason for refusal in world.proxy.refused] == ["cross_org", "cross_org"]

        world.fake.allow_replay_source("tenants", "control")
        assert world.get().status_code == 200 and len(team.requests) == 1
    finally:
        world.close()


def test_a_hostile_tenant_cannot_bounce_a_visitor_to_another_team():
    """The production layout (routing-sso-restore.md §1.4): router in its org, tenants in theirs on their own
    networks, cross-network replays off. Tenant A answers `fly-replay: app=team-b`: B never sees the request."""
    world = World(orgs=("control", "tenants"))
    try:
        world.fake.allow_replay_source("tenants", "control")
        world.app("router", org="control", network="router-net", hostname=WILDCARD)
        _, team_b = world.machine(world.app("team-b", org="tenants", network="team-b-net"))
        team_a_machine, _ = world.machine(world.app("team-a", org="tenants", network="team-a-net"),
                                          lambda request: (200, {"fly-replay": "app=team-b;state=stolen"}, b""))
        world.machine("router", replay_to(f"app=team-a;instance={team_a_machine};state=psk-a"))

        response = world.get(headers=HOST | {"Cookie": "session=visitor"})

        assert response.status_code == 502
        assert team_b.requests == [] and world.proxy.served_by("team-b") == []
        assert [delivery.app for delivery in world.proxy.served] == ["router", "team-a"]
        [refusal] = world.proxy.refused
        assert (refusal.reason, refusal.source_app, refusal.replay.app) == ("cross_network", "team-a", "team-b")
    finally:
        world.close()


@pytest.mark.parametrize(("size", "chunked", "replayed"), [
    (MAX_REPLAY_BODY, False, True), (MAX_REPLAY_BODY + 1, False, False), (MAX_REPLAY_BODY + 1, True, False)])
def test_a_body_over_1_mb_reaches_the_router_but_cannot_be_replayed(world, size, chunked, replayed):
    world.app("router", hostname=WILDCARD)
    _, team = world.machine(world.app("team-a"))
    _, router = world.machine("router", replay_to("app=team-a"))
    body = b"x" * size

    response = world.get("/upload", method="POST", content=iter([body[:1000], body[1000:]]) if chunked else body)

    assert len(router.requests[0]["body"]) == size  # the router always gets it: it can carry it itself
    assert response.status_code == (200 if replayed else 502)
    assert len(team.requests) == int(replayed)
    if not replayed:
        assert [refusal.reason for refusal in world.proxy.refused] == ["body_too_large"]


def test_a_replay_to_a_stopped_machine_starts_it_and_waits(world):
    world.app("router", hostname=WILDCARD)
    team_machine, team = world.machine(world.app("team-a"))
    world.machine("router", replay_to(f"app=team-a;instance={team_machine}"))
    world.stop_machine("team-a", team_machine)

    response = world.get()

    assert response.status_code == 200 and len(team.requests) == 1
    assert world.fake.machine(team_machine).state == "started"
    assert [event["type"] for event in world.fake.machine(team_machine).events[-2:]] == ["stop", "start"]


def test_a_replay_that_times_out_falls_back_to_the_issuer_with_fly_replay_failed(world):
    world.app("router", hostname=WILDCARD)
    team_machine, team = world.machine(world.app("team-a"))
    router_machine, router = world.machine(
        "router", replay_to(f"app=team-a;instance={team_machine};timeout=200ms;fallback=force_self"))
    world.stop_machine("team-a", team_machine)
    world.fake.latencies = dataclasses.replace(world.fake.latencies, start=30.0)  # a slow boot

    response = world.get()

    assert response.status_code == 200 and response.text == "router fallback page"
    assert team.requests == []
    [failed] = header_values(router.requests[-1], "fly-replay-failed")
    fields = dict(part.split("=", 1) for part in failed.split(";"))
    assert (fields["reason"], fields["app"], fields["instance"], fields["replay_source"]) == (
        "timeout", "team-a", team_machine, router_machine)
    assert int(fields["elapsed_ms"]) >= 200
    assert [delivery.kind for delivery in world.proxy.served] == ["direct", "fallback"]


def test_without_a_fallback_a_timeout_is_a_504_and_a_fallback_cannot_replay(world):
    world.app("router", hostname=WILDCARD)
    team_machine, _ = world.machine(world.app("team-a"))
    _, router = world.machine("router", replay_to(f"app=team-a;instance={team_machine};timeout=100ms"))
    world.stop_machine("team-a", team_machine)
    world.fake.latencies = dataclasses.replace(world.fake.latencies, start=30.0)

    assert world.get().status_code == 504
    router.respond = lambda request: (200, {"fly-replay": f"app=team-a;timeout=100ms;fallback=force_self"}, b"")
    assert world.get().status_code == 502
    assert [refusal.reason for refusal in world.proxy.refused] == ["timeout", "timeout", "fallback_replay"]


def test_a_replay_lands_only_on_a_service_publishing_the_port_it_came_on(world):
    port_80_only = {**WEB, "ports": [{"port": 80, "handlers": ["http"]}]}
    world.app("router", hostname=WILDCARD)
    _, team = world.machine(world.app("team-a"), services=[port_80_only])
    _, router = world.machine("router", replay_to("app=team-a"))

    assert world.get(port=80).status_code == 200 and len(team.requests) == 1
    assert world.get(port=443).status_code == 502 and len(team.requests) == 1
    assert world.proxy.refused[-1].reason == "no_candidate"

    router.respond = replay_to("app=team-a;fallback=prefer_self")
    assert world.get(port=443).text == "router fallback page"
    router.respond = replay_to("app=no-such-app;fallback=force_self")
    assert world.get(port=80).text == "router fallback page"
    assert ";reason=no_candidate;" in header_values(router.requests[-1], "fly-replay-failed")[0]


def test_a_replayed_request_may_replay_again_within_the_rules(world):
    world.app("router", hostname=WILDCARD)
    _, team_b = world.machine(world.app("team-b"))
    world.machine(world.app("team-a"), replay_to("app=team-b;state=second"))
    world.machine("router", replay_to("app=team-a;state=first"))

    assert world.get().status_code == 200
    assert header_values(team_b.requests[0], "fly-replay-src")[0].endswith(";state=second")
    assert [delivery.app for delivery in world.proxy.served] == ["router", "team-a", "team-b"]


def test_an_endless_replay_loop_ends_in_a_502(world):
    world.app("router", hostname=WILDCARD)
    world.machine("router", replay_to("app=router;elsewhere=true"))
    world.machine("router", replay_to("app=router;elsewhere=true"))

    assert world.get().status_code == 502
    assert world.proxy.refused[-1].reason == "too_many_replays"


def test_prefer_instance_falls_back_to_another_machine_and_says_so(world):
    world.app("router", hostname=WILDCARD)
    stopped, _ = world.machine(world.app("team-a"), services=[{**WEB, "autostart": False}])
    _, other = world.machine("team-a")
    world.stop_machine("team-a", stopped)
    world.machine("router", replay_to(f"app=team-a;prefer_instance={stopped}"))

    assert world.get().status_code == 200
    assert header_values(other.requests[0], "fly-preferred-instance-unavailable") == [stopped]


@pytest.mark.parametrize(("value", "expected"), [
    ('app=team-a;instance=0e28;state=x', {"app": "team-a", "instance": "0e28", "state": "x"}),
    ('app=team-a,state=x', {"app": "team-a", "state": "x"}),
    ('region="iad,ord,us";app=b', {"regions": ("iad", "ord", "us"), "app": "b"}),
    ('app=b; timeout=1s500ms ;fallback=prefer_self;elsewhere=true',
     {"app": "b", "timeout": 1.5, "fallback": "prefer_self", "elsewhere": True}),
])
def test_replay_headers_parse(value, expected):
    replay = parse_replay_header(value)
    assert {name: getattr(replay, name) for name in expected} == expected


@pytest.mark.parametrize("value", ["", "app", "app=b;fallback=somewhere", "state=only", "app=b;timeout=soon"])
def test_a_malformed_replay_header_is_refused(value):
    with pytest.raises(ValueError):
        parse_replay_header(value)


def test_a_malformed_replay_is_a_502_and_never_reaches_the_client(world):
    world.app("router", hostname=WILDCARD)
    world.machine("router", lambda request: (200, {"fly-replay": "state=only", "X-Secret": "internal"}, b"x"))

    response = world.get()

    assert response.status_code == 502 and "x-secret" not in response.headers
    assert world.proxy.refused[-1].reason == "invalid_replay"
    with pytest.raises(ValueError):
        parse_replay_json(b'{"app": "b", "transform": {"path": "no-slash"}}')


def test_flycast_reaches_an_app_only_from_the_network_its_address_is_in(world):
    """The path for bodies the router cannot replay: it calls the team over Flycast, allocated into its network."""
    world.app("router", network="router-net", hostname=WILDCARD)
    team_machine, team = world.machine(world.app("team-a", network="team-a-net"))
    world.stop_machine("team-a", team_machine)
    big = b"x" * (MAX_REPLAY_BODY * 3)

    def from_router(network):
        return httpx.post(world.proxy.flycast_url(network) + "/upload", content=big,
                          headers={"Host": "team-a.flycast"}, timeout=30)

    assert from_router("router-net").status_code == 404  # no Flycast address yet
    assert world.http.post("/apps/team-a/ip_assignments", json={"type": "private_v6"}).status_code == 200
    assert from_router("router-net").status_code == 404  # in its own network only
    assert world.http.post("/apps/team-a/ip_assignments",
                           json={"type": "private_v6", "network": "router-net"}).status_code == 200

    response = from_router("router-net")

    assert response.status_code == 200 and len(team.requests[0]["body"]) == len(big)  # woken, body whole
    assert world.get(headers={"Host": "team-a.flycast"}).status_code == 404  # not from the internet


def test_a_flycast_address_routes_by_address_and_passes_the_host_on(world):
    """Flycast is an address (`<app>.flycast` resolves to the app's private IPv6): the proxy picks the app by the
    address dialled, not by `Host`, so a caller may send the name the Machine expects (the router sends the team's
    own name, which the instance's guard checks)."""
    world.app("router", network="router-net", hostname=WILDCARD)
    _, team = world.machine(world.app("team-a", network="team-a-net"))
    address = world.proxy.flycast_url("router-net", "team-a")
    assert httpx.get(address + "/", headers=HOST, timeout=30).status_code == 404  # no Flycast address yet
    assert world.http.post("/apps/team-a/ip_assignments",
                           json={"type": "private_v6", "network": "router-net"}).status_code == 200

    response = httpx.post(address + "/upload", content=b"x" * (MAX_REPLAY_BODY * 2), headers=HOST, timeout=30)

    assert response.status_code == 200 and len(team.requests[0]["body"]) == MAX_REPLAY_BODY * 2
    assert header_values(team.requests[0], "host") == ["acme.teams.example"]
    assert httpx.get(world.proxy.flycast_url("team-a-net", "team-a") + "/", headers=HOST,
                     timeout=30).status_code == 404  # its address is in router-net only


@pytest.mark.parametrize("framing", [{"Content-Length": "-5"}, {"Content-Length": "ten"},
                                     {"Transfer-Encoding": "chunked"}])
def test_a_request_the_edge_cannot_read_is_a_400(world, framing):
    world.app("router", hostname=WILDCARD)
    _, router = world.machine("router")
    connection = http.client.HTTPConnection("127.0.0.1", int(world.proxy.url(443).rsplit(":", 1)[1]), timeout=30)
    connection.putrequest("POST", "/", skip_host=True)
    for name, value in {**HOST, **framing}.items():
        connection.putheader(name, value)
    connection.endheaders(b"zz\r\nnot hex\r\n" if "Transfer-Encoding" in framing else b"")

    assert connection.getresponse().status == 400
    assert router.requests == []
    connection.close()


def test_a_region_replay_prefers_the_regions_in_order(world):
    world.app("router", hostname=WILDCARD)
    world.app("team-a")
    _, in_ord = world.machine("team-a", region="ord")
    _, in_ams = world.machine("team-a", region="ams")
    _, router = world.machine("router", replay_to('app=team-a;region="eu,us"'))

    for _ in range(3):
        assert world.get().status_code == 200
    assert (len(in_ams.requests), len(in_ord.requests)) == (3, 0)

    router.respond = replay_to("app=team-a;region=syd")
    assert world.get().status_code == 502 and world.proxy.refused[-1].reason == "no_candidate"
