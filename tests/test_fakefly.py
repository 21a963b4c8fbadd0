"""fakefly on its own, driven with raw httpx: spec checks, state rules, faults, and the HTTP server mode."""

from __future__ import annotations

import httpx
import pytest

from fakefly import (
    ROUTES, FakeFly, HostFull, Latencies, NotVisible, ResponseLost, SilentRevert, SpecViolation, Unavailable,
    VirtualClock, serve,
)
from fakefly.spec import load_spec
from fakefly.state import MachineRecord

AUTH = {"Authorization": "Bearer test-token"}
IMAGE = "registry.fly.io/cloudctl-team:v1"


@pytest.fixture
def http(fake):
    with httpx.Client(base_url="https://api.machines.dev/v1", transport=fake.transport(), headers=AUTH) as client:
        yield client


def make_app(http, name="team-a"):
    response = http.post("/apps", json={"name": name, "org_slug": "acme", "network": f"{name}-net"})
    assert response.status_code == 201, response.text
    return name


def make_volume(http, app="team-a"):
    response = http.post(f"/apps/{app}/volumes", json={
        "name": "data", "region": "ord", "size_gb": 10,
        "compute": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024}})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def make_machine(http, app="team-a", *, config=None, **fields):
    body = {"name": fields.pop("name", "main"), "region": "ord", "config": {"image": IMAGE, **(config or {})},
            **fields}
    response = http.post(f"/apps/{app}/machines", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def wait(http, machine, state="started", **params):
    return http.get(f"/apps/team-a/machines/{machine['id']}/wait", params={"state": state, **params})


def test_every_route_is_an_operation_of_the_spec():
    spec = load_spec()
    for route in ROUTES:
        assert spec.operation(route.method, route.template)["operationId"]


@pytest.mark.parametrize(("path", "body", "complaint"), [
    ("/apps/team-a/volumes", {"name": "data", "region": "ord", "size_gb": "10"}, "size_gb"),
    ("/apps/team-a/volumes", {"name": "data", "region": "ord", "size_gb": 501}, "size_gb"),
    ("/apps/team-a/volumes", {"region": "ord", "size_gb": 1}, "'name' is a required property"),
    ("/apps", {"app_name": "team-b", "org_slug": "acme"}, "'app_name' was unexpected"),
    ("/apps/team-a/machines", {"config": {"env": {"A": "1"}}}, "'image' is a required property"),
    ("/apps/team-a/machines", {"config": {"image": IMAGE, "guest": {"memory_mb": 1000}}}, "multiple of 256"),
    ("/apps/team-a/machines", {"config": {"image": IMAGE, "files": [{"guest_path": "/a"}]}}, "files/0"),
    ("/apps/team-a/machines", {"config": {"image": IMAGE, "services": [{"autostop": "sometimes"}]}}, "autostop"),
])
def test_a_request_that_violates_the_spec_is_refused_and_recorded(fake, http, path, body, complaint):
    make_app(http)

    response = http.post(path, json=body)

    assert response.status_code == 400
    assert complaint in response.json()["error"]
    assert [refusal.path for refusal in fake.refused] == [f"/v1{path}"]
    assert complaint in " ".join(fake.refused[0].errors)
    assert not fake.volumes and not fake.machines


def test_query_strings_and_required_headers_are_checked_too(fake, http):
    make_app(http)
    machine = make_machine(http)
    machine_path = f"/apps/team-a/machines/{machine['id']}"

    assert http.get(machine_path + "/wait", params={"state": "running"}).status_code == 400
    assert http.get("/apps/team-a/machines", params={"include_deleted": "yes"}).status_code == 400
    assert http.get("/apps/team-a/machines", params={"colour": "blue"}).status_code == 400
    assert http.delete(machine_path + "/lease").status_code == 400  # the nonce header is required
    assert http.get(machine_path + "/wait", params={"state": "stopped"}).status_code == 400  # needs a version

    assert len(fake.refused) == 5
    assert http.get("/apps/team-a/machines", params={"metadata.team": "a", "include_deleted": "true"}).is_success


def test_app_names_are_global_and_someone_elses_answer_403(http):
    created = http.post("/apps", json={"name": "team-a", "org_slug": "acme", "network": "team-a-net"})
    assert created.status_code == 201 and created.json()["id"]

    taken = http.post("/apps", json={"name": "team-a", "org_slug": "acme"})
    foreign = http.post("/apps", json={"name": "someone-elses", "org_slug": "acme"})

    for response in (taken, foreign):
        assert response.status_code == 422
        assert response.json()["status"] == "name_taken"
        assert response.headers["fly-request-id"]
    assert http.get("/apps/team-a").json()["network"] == "team-a-net"
    assert http.get("/apps/someone-elses").status_code == 403
    assert http.get("/apps/free-name").status_code == 404
    assert [app["name"] for app in http.get("/apps", params={"org_slug": "acme"}).json()["apps"]] == ["team-a"]


def test_a_machine_boots_after_its_latencies_and_wait_sees_it(clock, http):
    make_app(http)
    before = clock.now()
    machine = make_machine(http)
    assert machine["state"] == "created"
    assert 1.0 <= clock.now() - before <= 2.0  # create_machine's latency

    assert http.get(f"/apps/team-a/machines/{machine['id']}").json()["state"] == "starting"
    started_wait = clock.now()
    response = wait(http, machine)

    assert response.json() == {"ok": True, "state": "started", "version": machine["instance_id"],
                               "event_id": response.json()["event_id"]}
    assert clock.now() - started_wait == pytest.approx(1.0)  # start's latency, slept in virtual time


CHECKED_SERVICE = {"services": [{"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 80}],
                                  "checks": [{"type": "http", "port": 8080, "path": "/-/versions.json"}]}]}


@pytest.mark.parametrize(("image", "verdict"), [(IMAGE, "passing"), ("registry.fly.io/cloudctl-team:bad", "critical")])
def test_service_checks_have_no_results_until_their_first_run_then_the_images_health(clock, fake, http, image,
                                                                                     verdict):
    fake.unhealthy_images.add("registry.fly.io/cloudctl-team:bad")
    make_app(http)
    service = {**CHECKED_SERVICE["services"][0]}
    service["checks"] = [{**service["checks"][0], "grace_period": "10s"}]
    machine = make_machine(http, config={"services": [service], "image": image})

    def checks():
        return [check["status"] for check in http.get(f"/apps/team-a/machines/{machine['id']}").json()["checks"]]

    assert checks() == []  # not started yet
    wait(http, machine)
    assert checks() == []  # started, but no check has run yet (flyctl PR #4952): not a "pass"
    clock.sleep(10)  # the grace period
    assert checks() == []
    clock.sleep(fake.latencies.health)
    assert checks() == [verdict]


def test_top_level_checks_report_by_their_name_beside_the_services_ones(clock, fake, http):
    make_app(http)
    machine = make_machine(http, config={**CHECKED_SERVICE, "checks": {
        "restored": {"type": "http", "port": 8080, "path": "/-/versions.json", "grace_period": "5s"}}})
    wait(http, machine)
    clock.sleep(5 + fake.latencies.health)
    checks = http.get(f"/apps/team-a/machines/{machine['id']}").json()["checks"]
    assert [(check["name"], check["status"]) for check in checks] == [
        ("restored", "passing"), ("servicecheck-00-http-8080", "passing")]
    assert fake.refused == []


def test_request_latency_is_added_to_every_answer(clock):
    fake = FakeFly(clock=clock, orgs=("acme",), latencies=Latencies(request=0.05))
    with httpx.Client(base_url="http://fly/v1", transport=fake.transport(), headers=AUTH) as http:
        before = clock.now()
        http.get("/apps/none")
        http.get("/apps/none")
    assert clock.now() - before == pytest.approx(0.1)


def test_time_scale_zero_makes_everything_instant(clock):
    fake = FakeFly(clock=clock, orgs=("acme",), time_scale=0)
    with httpx.Client(base_url="http://fly/v1", transport=fake.transport(), headers=AUTH) as http:
        make_app(http)
        make_volume(http)
        machine = make_machine(http)
        assert wait(http, machine).status_code == 200
    assert clock.now() == VirtualClock().now()


def test_autostop_is_answered_as_booleans_for_off_and_stop(http):
    make_app(http)
    services = [{"protocol": "tcp", "internal_port": 8001, "autostop": mode} for mode in ("off", "stop", "suspend")]

    machine = make_machine(http, config={"services": services})

    assert [service["autostop"] for service in machine["config"]["services"]] == [False, True, "suspend"]


def test_update_bumps_the_version_and_a_stale_version_is_refused(http):
    make_app(http)
    machine = make_machine(http)
    path = f"/apps/team-a/machines/{machine['id']}"

    updated = http.post(path, json={"config": {"image": IMAGE + "-2"}, "current_version": machine["instance_id"]})
    stale = http.post(path, json={"config": {"image": IMAGE + "-3"}, "current_version": machine["instance_id"]})

    assert updated.status_code == 200
    assert updated.json()["instance_id"] != machine["instance_id"]
    assert stale.status_code == 412
    assert http.get(path).json()["config"]["image"] == IMAGE + "-2"


def test_update_with_skip_launch_keeps_a_stopped_machine_stopped(fake, http):
    make_app(http)
    machine = make_machine(http, skip_launch=True)
    path = f"/apps/team-a/machines/{machine['id']}"

    http.post(path, json={"config": {"image": IMAGE + "-2"}, "current_version": machine["instance_id"],
                          "skip_launch": True})
    assert wait(http, machine, "settled").json()["state"] == "created"

    current = http.get(path).json()["instance_id"]
    http.post(path, json={"config": {"image": IMAGE + "-3"}, "current_version": current})
    assert wait(http, machine).json()["state"] == "started"


def test_leases_enforce_nonces_on_every_mutation_and_expire(clock, fake, http):
    make_app(http)
    machine = make_machine(http)
    path = f"/apps/team-a/machines/{machine['id']}"

    acquired = http.post(path + "/lease", json={"ttl": 30, "description": "deploy"})
    assert acquired.status_code == 201
    nonce = acquired.json()["data"]["nonce"]
    held = {"fly-machine-lease-nonce": nonce}

    assert http.post(path + "/lease", json={"ttl": 30}).status_code == 409
    assert http.post(path + "/stop").status_code == 409
    assert http.post(path + "/metadata/key", json={"value": "v"}).status_code == 409
    assert http.delete(path, params={"force": "true"}).status_code == 409
    assert "lease currently held by" in http.post(path + "/stop").json()["error"]
    assert http.post(path + "/stop", headers=held).status_code == 200
    assert http.post(path + "/lease", json={"ttl": 30}, headers=held).status_code == 201  # refresh
    assert http.get(path + "/lease").json()["data"]["nonce"] == nonce

    clock.sleep(31)
    assert http.get(path + "/lease").status_code == 404
    assert http.post(path + "/start").status_code == 200  # the expired lease binds no one
    assert http.post(path + "/lease", json={"ttl": 10}).status_code == 201
    other = http.delete(path + "/lease", headers={"fly-machine-lease-nonce": "not-it"})
    assert other.status_code == 409
    assert fake.refused == []


def test_leases_can_be_answered_flat_as_the_spec_shows(clock):
    fake = FakeFly(clock=clock, orgs=("acme",), lease_envelope=False)
    with httpx.Client(base_url="http://fly/v1", transport=fake.transport(), headers=AUTH) as http:
        make_app(http)
        machine = make_machine(http)
        lease = http.post(f"/apps/team-a/machines/{machine['id']}/lease", json={"ttl": 30}).json()
    assert set(lease) == {"nonce", "expires_at", "owner", "description", "version"}


def test_wait_answers_408_after_at_most_60_seconds(clock, http):
    make_app(http)
    machine = make_machine(http, skip_launch=True)
    before = clock.now()

    response = wait(http, machine, timeout=600)

    assert response.status_code == 408
    assert clock.now() - before == pytest.approx(60)


def test_rate_limits_answer_429_per_action_and_machine(clock, fake, http):
    make_app(http)
    first, second = make_machine(http, name="one"), make_machine(http, name="two")

    def stop(machine):
        return http.post(f"/apps/team-a/machines/{machine['id']}/stop").status_code

    assert [stop(first) for _ in range(4)] == [200, 200, 200, 429]
    assert stop(second) == 200  # a different machine has its own bucket
    assert [http.get(f"/apps/team-a/machines/{first['id']}").status_code for _ in range(11)] == [200] * 10 + [429]
    assert fake.throttled_count == 2
    clock.sleep(1)
    assert stop(first) == 200


def test_a_volume_is_mounted_by_one_machine_in_its_region_until_destroyed(clock, http):
    make_app(http)
    volume_id = make_volume(http)
    mount = {"mounts": [{"volume": volume_id, "path": "/data"}]}
    machine = make_machine(http, config=mount)
    assert http.get(f"/apps/team-a/volumes/{volume_id}").json()["attached_machine_id"] == machine["id"]

    second = http.post("/apps/team-a/machines", json={"name": "two", "config": {"image": IMAGE, **mount}})
    assert second.status_code == 412
    assert http.delete(f"/apps/team-a/volumes/{volume_id}").status_code == 412
    assert http.delete(f"/apps/team-a/machines/{machine['id']}").status_code == 412  # running: needs force

    http.delete(f"/apps/team-a/machines/{machine['id']}", params={"force": "true"})
    clock.sleep(1)
    assert http.get(f"/apps/team-a/volumes/{volume_id}").json()["attached_machine_id"] is None
    elsewhere = http.post("/apps/team-a/machines", json={"name": "three", "region": "ams",
                                                        "config": {"image": IMAGE, **mount}})
    assert elsewhere.status_code == 400


def test_list_machines_filters_on_metadata_and_hides_destroyed(clock, http):
    make_app(http)
    wanted = make_machine(http, name="one", config={"metadata": {"cloudctl_launch_id": "L1"}})
    make_machine(http, name="two", config={"metadata": {"cloudctl_launch_id": "L2"}})

    found = http.get("/apps/team-a/machines", params={"metadata.cloudctl_launch_id": "L1"}).json()
    assert [machine["id"] for machine in found] == [wanted["id"]]

    http.delete(f"/apps/team-a/machines/{wanted['id']}", params={"force": "true"})
    clock.sleep(1)
    assert http.get("/apps/team-a/machines", params={"metadata.cloudctl_launch_id": "L1"}).json() == []
    deleted = http.get("/apps/team-a/machines", params={"metadata.cloudctl_launch_id": "L1",
                                                        "include_deleted": "true"}).json()
    assert [machine["state"] for machine in deleted] == ["destroyed"]


def test_deleting_an_app_with_running_machines_needs_force(http, fake, clock):
    make_app(http)
    make_machine(http)

    assert http.delete("/apps/team-a").status_code == 412
    assert http.delete("/apps/team-a", params={"force": "true"}).status_code == 202
    # Accepted, not done (DOCS: 202): the name stays taken and its Machines go down meanwhile.
    assert http.get("/apps/team-a").status_code == 200
    assert http.post("/apps", json={"name": "team-a", "org_slug": "acme"}).status_code == 422
    assert [machine["state"] for machine in http.get("/apps/team-a/machines").json()] == ["destroying"]
    clock.sleep(5)  # the deletion's latency at most
    assert http.get("/apps/team-a").status_code == 404
    assert fake.apps == {} and fake.machines == {}


def test_org_machines_are_listed_in_pages_with_a_cursor(clock):
    fake = FakeFly(clock=clock, orgs=("acme",), org_page_cap=2)
    with httpx.Client(base_url="http://fly/v1", transport=fake.transport(), headers=AUTH) as http:
        make_app(http)
        created = {make_machine(http, name=f"m{index}")["id"] for index in range(5)}
        clock.sleep(fake.latencies.org_listing_lag)  # the listing is a point in time, a little behind
        pages, cursor = [], None
        while True:
            body = http.get("/orgs/acme/machines", params={"limit": 1000} | ({"cursor": cursor} if cursor else {}))
            pages.append([machine["id"] for machine in body.json()["machines"]])
            cursor = body.json().get("next_cursor")
            if not cursor:
                break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert {machine_id for page in pages for machine_id in page} == created


def test_unavailable_fails_only_the_scheduled_calls(clock, fake, http):
    make_app(http)
    fake.inject("get_app", Unavailable(502), calls=[2, 3])

    assert [http.get("/apps/team-a").status_code for _ in range(3)] == [200, 502, 502]
    clock.sleep(1)  # get_app's rate limit: a burst of 3
    assert http.get("/apps/team-a").status_code == 200


def test_response_lost_carries_out_the_create_then_answers_408(fake, http):
    make_app(http)
    fake.inject("create_machine", ResponseLost(408))

    response = http.post("/apps/team-a/machines", json={"name": "main", "config": {"image": IMAGE}})

    assert response.status_code == 408
    assert [machine.name for machine in fake.machines.values()] == ["main"]


def test_a_new_machine_can_stay_invisible_to_reads_for_a_while(clock, fake, http):
    make_app(http)
    fake.inject("create_machine", NotVisible(seconds=2))
    machine = make_machine(http)
    path = f"/apps/team-a/machines/{machine['id']}"

    assert http.get(path).status_code == 404
    assert wait(http, machine).status_code == 404
    assert http.get("/apps/team-a/machines").json() == []
    clock.sleep(2)
    assert http.get(path).status_code == 200


def test_silent_revert_reports_success_then_keeps_the_old_version(clock, fake, http):
    make_app(http)
    machine = make_machine(http)
    fake.inject("update_machine", SilentRevert())

    updated = http.post(f"/apps/team-a/machines/{machine['id']}",
                        json={"config": {"image": IMAGE + "-2"}, "current_version": machine["instance_id"]})
    assert updated.status_code == 200 and updated.json()["config"]["image"] == IMAGE + "-2"

    settled = wait(http, machine).json()
    assert settled["version"] == machine["instance_id"] != updated.json()["instance_id"]
    assert fake.machine(machine["id"]).config["image"] == IMAGE


def test_host_full_refuses_a_machine_on_an_existing_volume(fake, http):
    make_app(http)
    volume_id = make_volume(http)
    fake.inject("create_machine", HostFull())

    response = http.post("/apps/team-a/machines", json={
        "config": {"image": IMAGE, "mounts": [{"volume": volume_id, "path": "/data"}]}})

    assert response.status_code == 412
    assert response.json()["status"] == "volume_placement_capacity"


def test_probabilistic_faults_follow_the_seed(clock):
    def outcomes(seed):
        fake = FakeFly(clock=VirtualClock(), orgs=("acme",), seed=seed, rate_limits=False)
        fake.inject("*", Unavailable(503), probability=0.5)
        with httpx.Client(base_url="http://fly/v1", transport=fake.transport(), headers=AUTH) as http:
            return [http.get("/apps/x").status_code for _ in range(20)]

    assert outcomes(7) == outcomes(7)
    assert set(outcomes(7)) == {404, 503}


def test_a_fault_only_applies_where_it_makes_sense(fake):
    with pytest.raises(ValueError, match="applies to update_machine"):
        fake.inject("create_app", SilentRevert())


def test_a_response_the_spec_refuses_is_a_fake_bug_and_raises(http, monkeypatch):
    make_app(http)
    monkeypatch.setattr(MachineRecord, "to_json", lambda self, summary=False: {"id": 42})

    with pytest.raises(SpecViolation, match="42 is not of type 'string'"):
        http.post("/apps/team-a/machines", json={"config": {"image": IMAGE}})


def test_requests_need_a_token_and_unimplemented_endpoints_say_so(fake, http):
    assert http.get("/apps", params={"org_slug": "acme"}, headers={"Authorization": ""}).status_code == 401
    assert http.get("/platform/regions").status_code == 501
    assert http.get("/nowhere").status_code == 404


def test_serves_real_http_on_localhost():
    fake = FakeFly(orgs=("acme",), latencies=Latencies(), time_scale=0)
    url, stop = serve(fake)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        with httpx.Client(base_url=url, headers=AUTH) as http:
            make_app(http)
            response = http.get("/apps/team-a")
        assert response.status_code == 200
        assert response.headers["fly-request-id"]
        assert fake.calls["get_app"] == 1
    finally:
        stop()


def test_a_request_whose_client_died_mid_body_is_dropped_not_refused():
    """A client killed between its headers and its body (a SIGKILLed deploy) sent no request: a server reads
    fewer bytes than Content-Length and does nothing. The fake must not count it as a request that broke the spec
    (`refused`), nor carry anything out."""
    import socket
    import time

    fake = FakeFly(orgs=("acme",), latencies=Latencies(), time_scale=0)
    url, stop = serve(fake)
    try:
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
                               b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"app_na")
        deadline = time.monotonic() + 5
        while fake.calls["create_app"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the handler thread has read what it will ever get
        assert fake.refused == []
        assert not fake.apps
    finally:
        stop()


SCALE_TO_ZERO = {"services": [{"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 80}], "autostop": "stop",
                               "autostart": True, "min_machines_running": 0}]}


def test_an_idle_machine_stops_by_itself_and_a_request_wakes_it(clock, fake, http):
    make_app(http)
    machine = make_machine(http, config=SCALE_TO_ZERO)
    wait(http, machine)

    def state():
        return http.get(f"/apps/team-a/machines/{machine['id']}").json()["state"]

    clock.sleep(fake.latencies.autostop_idle - 1)
    assert state() == "started"
    clock.sleep(1)
    assert state() == "stopping"  # Fly's proxy stopped it: nobody asked through the API
    assert wait(http, machine, "stopped", version=machine["instance_id"]).status_code == 200

    fake.proxy_request("team-a")
    assert state() == "starting"  # woken by a request, again without the API
    assert wait(http, machine).json()["state"] == "started"
    fake.proxy_request("team-a")  # traffic keeps it up
    clock.sleep(fake.latencies.autostop_idle - 1)
    assert state() == "started"


def test_a_machine_without_autostop_never_stops_by_itself(clock, fake, http):
    make_app(http)
    machine = make_machine(http, config=CHECKED_SERVICE)
    wait(http, machine)
    clock.sleep(fake.latencies.autostop_idle * 3)
    assert http.get(f"/apps/team-a/machines/{machine['id']}").json()["state"] == "started"


def test_an_update_is_asynchronous_and_wait_honours_the_version(clock, fake, http):
    make_app(http)
    machine = make_machine(http)
    wait(http, machine)
    path = f"/apps/team-a/machines/{machine['id']}"
    updated = http.post(path, json={"config": {"image": IMAGE + "-2"}, "current_version": machine["instance_id"]})
    assert updated.json()["state"] == "updating"  # answered at once; the replacement goes on
    assert http.get(path).json()["state"] == "updating"

    before = clock.now()
    reached = wait(http, machine, version=updated.json()["instance_id"]).json()
    assert (reached["state"], reached["version"]) == ("started", updated.json()["instance_id"])
    assert clock.now() - before == pytest.approx(fake.latencies.update)  # the new version, not the old one
    # A version the Machine has left answers at once, with the version it is on.
    assert wait(http, machine, version=machine["instance_id"]).json()["version"] == updated.json()["instance_id"]


@pytest.mark.parametrize(("guest", "allowed"), [
    ({"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}, True),
    ({"cpu_kind": "shared", "cpus": 1, "memory_mb": 2048}, True),
    ({"cpu_kind": "shared", "cpus": 1, "memory_mb": 4096}, False),
    ({"cpu_kind": "shared", "cpus": 3, "memory_mb": 1024}, False),
    ({"cpu_kind": "performance", "cpus": 1, "memory_mb": 1024}, False),
    ({"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096}, True),
])
def test_only_guest_sizes_fly_sells_are_accepted(fake, http, guest, allowed):
    make_app(http)
    response = http.post("/apps/team-a/machines", json={"region": "ord", "config": {"image": IMAGE, "guest": guest}})
    assert (response.status_code == 200) == allowed, response.text
    assert (fake.refused == []) == allowed


def test_an_unknown_region_is_refused(http):
    make_app(http)
    response = http.post("/apps/team-a/volumes", json={"name": "data", "region": "xyz", "size_gb": 1})
    assert response.status_code == 400 and "not found" in response.json()["error"]
    assert http.post("/apps/team-a/machines", json={"region": "xyz", "config": {"image": IMAGE}}).status_code == 400


def test_the_org_listing_is_a_point_in_time_a_little_behind(clock, fake, http):
    make_app(http)
    machine = make_machine(http)

    def listed():
        return {entry["id"]: entry["state"] for entry in http.get("/orgs/acme/machines").json()["machines"]}

    assert listed() == {}  # too new to be listed
    clock.sleep(fake.latencies.org_listing_lag + fake.latencies.start)
    assert listed() == {machine["id"]: "started"}
    assert http.post(f"/apps/team-a/machines/{machine['id']}/stop").status_code == 200
    assert listed() == {machine["id"]: "started"}  # still as it was
    clock.sleep(fake.latencies.org_listing_lag + fake.latencies.stop)
    assert listed() == {machine["id"]: "stopped"}
