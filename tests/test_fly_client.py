"""FlyClient against fakefly: in-process on virtual time (fast, deterministic), and once over real HTTP."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from fakefly import (
    ROUTES, FakeFly, HostFull, Latencies, NotVisible, ResponseLost, SilentRevert, Unavailable, serve,
)
from flyapi import FlyAPIError, FlyClient, Lease, Rate, RateLimiter

TOKEN = "secret-test-token"
IMAGE = "registry.fly.io/cloudctl-team:v1"
GUEST = {"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024}


def make_client(clock, transport, **options):
    return FlyClient(token=TOKEN, transport=transport, clock=clock.now, sleep=clock.sleep, rng=random.Random(0),
                     **options)


@pytest.fixture
def client(clock, fake):
    with make_client(clock, fake.transport()) as client:
        yield client


def machine_config(**extra):
    return {"image": IMAGE, "guest": GUEST, **extra}


def provision(client, *, launch_id="L1", volume=True):
    client.create_app("team-a", "acme", "team-a-net")
    mounts = []
    if volume:
        volume_id = client.create_volume("team-a", "data", "ord", 10, GUEST).id
        mounts = [{"volume": volume_id, "path": "/data"}]
    return client.create_machine("team-a", name="main", region="ord",
                                 config=machine_config(mounts=mounts, metadata={"cloudctl_launch_id": launch_id}))


def test_importing_flyapi_loads_nothing_of_django_or_cloudctl():
    # A fresh interpreter: this test process has Django loaded already.
    check = ("import flyapi, sys; "
             "ours = [m for m in sys.modules if m.split('.')[0] in ('django', 'teams', 'credentials', 'cloudctl')]; "
             "assert not ours, ours")
    result = subprocess.run([sys.executable, "-c", check], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_method_round_trips_without_a_refused_request(clock, fake, client):
    app = client.create_app("team-a", "acme", "team-a-net")
    assert (app.name, app.org_slug, app.network) == ("team-a", "acme", "team-a-net") and app.id
    assert client.get_app("team-a").org_slug == "acme"
    assert [listed.name for listed in client.list_apps("acme")] == ["team-a"]
    secrets_version = client.set_secrets("team-a", {"CLOUDCTL_TOKEN": "t0k"})

    volume = client.create_volume("team-a", "data", "ord", 10, GUEST)
    assert [listed.id for listed in client.list_volumes("team-a")] == [volume.id]
    machine = client.create_machine(
        "team-a", name="main", region="ord", min_secrets_version=secrets_version,
        config=machine_config(mounts=[{"volume": volume.id, "path": "/data"}], metadata={"cloudctl_launch_id": "L1"}))
    assert client.get_volume("team-a", volume.id).attached_machine_id == machine.id
    assert client.wait("team-a", machine.id, "started").version == machine.instance_id
    assert client.get_machine("team-a", machine.id).state == "started"
    assert [found.id for found in client.list_machines("team-a", metadata={"cloudctl_launch_id": "L1"})] == [machine.id]

    lease = client.acquire_lease("team-a", machine.id, 30, "deploy")
    assert client.get_lease("team-a", machine.id).nonce == lease.nonce
    assert client.acquire_lease("team-a", machine.id, 30, "deploy", nonce=lease.nonce).nonce == lease.nonce
    client.set_metadata("team-a", machine.id, "cloudctl_release", "42", nonce=lease.nonce)
    client.delete_metadata("team-a", machine.id, "cloudctl_release", nonce=lease.nonce)
    updated = client.update_machine("team-a", machine.id, config={**machine.config, "image": IMAGE + "-2"},
                                    current_version=machine.instance_id, nonce=lease.nonce)
    assert updated.instance_id != machine.instance_id and updated.image == IMAGE + "-2"
    assert client.wait("team-a", machine.id, "started", version=updated.instance_id).version == updated.instance_id
    client.suspend("team-a", machine.id, nonce=lease.nonce)
    client.wait("team-a", machine.id, "suspended")
    client.start("team-a", machine.id, nonce=lease.nonce)
    client.wait("team-a", machine.id, "started")
    client.stop("team-a", machine.id, nonce=lease.nonce)
    client.wait("team-a", machine.id, "stopped", version=updated.instance_id)
    client.release_lease("team-a", machine.id, lease.nonce)
    assert client.get_lease("team-a", machine.id) is None
    assert [listed.app_name for listed in client.list_org_machines("acme")] == ["team-a"]

    client.destroy_machine("team-a", machine.id)
    client.wait("team-a", machine.id, "destroyed")
    assert client.list_machines("team-a") == []
    assert [listed.state for listed in client.list_machines("team-a", include_deleted=True)] == ["destroyed"]
    assert client.delete_volume("team-a", volume.id).id == volume.id

    address = client.assign_ip("team-a", "v6")
    assert [ip.ip for ip in client.list_ip_assignments("team-a")] == [address.ip]
    client.release_ip("team-a", address.ip)
    assert client.request_certificate("team-a", "*.teams.example").status == "pending_validation"
    assert client.get_certificate("team-a", "*.teams.example").hostname == "*.teams.example"
    assert client.check_certificate("team-a", "*.teams.example").raw["dns_records"]["a"] == []
    assert [listed.hostname for listed in client.list_certificates("team-a")] == ["*.teams.example"]
    client.delete_certificate("team-a", "*.teams.example")
    client.delete_app("team-a")

    assert fake.refused == []
    assert fake.throttled_count == 0
    assert set(fake.calls) == {route.action for route in ROUTES}


def test_errors_carry_the_http_status_flys_code_and_the_request_id(client):
    client.create_app("team-a", "acme", "team-a-net")

    with pytest.raises(FlyAPIError) as taken:
        client.create_app("team-a", "acme", "team-a-net")
    with pytest.raises(FlyAPIError) as foreign:
        client.get_app("someone-elses")

    assert (taken.value.http_status, taken.value.status, taken.value.ambiguous) == (422, "name_taken", False)
    assert taken.value.request_id and taken.value.request_id.endswith("-ord")
    assert taken.value.request_id in str(taken.value)
    assert foreign.value.http_status == 403


@pytest.mark.parametrize(("http_status", "status", "message", "kind"), [
    (None, None, "ConnectError: refused", "transient"),
    (408, None, "request timed out", "transient"),
    (429, None, "rate limit exceeded", "transient"),
    (503, None, "unavailable", "transient"),
    (422, "name_taken", "Validation failed: Name has already been taken", "name_taken"),
    (422, None, "a machine named team-a-main already exists in team-a", "name_taken"),
    (412, "volume_placement_capacity", "insufficient resources to create new machine with existing volume",
     "capacity"),
    (409, None, "insufficient memory available to fulfill request", "capacity"),
    (409, None, "aborted: machine ID 1 lease currently held by x@tokens.fly.io", "lease_held"),
    (412, None, "failed_precondition: machine version 01A is not the current version 01B", "stale_version"),
    (400, None, "bad request", None),
    (404, None, "machine not found", None),
])
def test_fly_errors_are_classified_in_one_place(http_status, status, message, kind):
    error = FlyAPIError(http_status, status, message, None)
    kinds = {"transient", "name_taken", "capacity", "lease_held", "stale_version"}
    assert {name for name in kinds if getattr(error, name)} == ({kind} if kind else set())
    assert error.retryable == (kind in ("transient", "lease_held", "stale_version"))


def test_each_call_is_logged_with_its_request_id_and_never_the_token(clock, fake, caplog):
    seen_request_ids = []

    def recording(request):
        response = fake.transport().handle_request(request)
        seen_request_ids.append(response.headers["fly-request-id"])
        return response

    with caplog.at_level(logging.DEBUG):
        with make_client(clock, httpx.MockTransport(recording)) as client:
            client.create_app("team-a", "acme", "team-a-net")
            client.set_secrets("team-a", {"API_KEY": "hunter2"})

    ours = [record.getMessage() for record in caplog.records if record.name == "flyapi.client"]
    assert "POST /apps -> 201" in ours[0] and seen_request_ids[0] in ours[0]
    assert "POST /apps/team-a/secrets -> 200" in ours[1] and seen_request_ids[1] in ours[1]
    assert TOKEN not in caplog.text and "hunter2" not in caplog.text


def test_a_429_is_retried_until_it_succeeds(clock, fake):
    with make_client(clock, fake.transport(), limiter=RateLimiter.unlimited()) as client:
        machine = provision(client, volume=False)
        for _ in range(4):
            client.stop("team-a", machine.id)

    assert fake.throttled_count >= 1  # jittered retries may come back before the bucket refills
    assert fake.calls["stop_machine"] == 4 + fake.throttled_count


def test_a_5xx_on_a_read_is_retried(fake, client):
    client.create_app("team-a", "acme", "team-a-net")
    fake.inject("get_app", Unavailable(503), calls=[1, 2])

    assert client.get_app("team-a").name == "team-a"
    assert fake.calls["get_app"] == 3


def test_retries_stop_after_max_attempts(fake, client):
    client.create_app("team-a", "acme", "team-a-net")
    fake.inject("get_app", Unavailable(502), probability=1.0)

    with pytest.raises(FlyAPIError) as failure:
        client.get_app("team-a")

    assert (failure.value.http_status, failure.value.ambiguous) == (502, False)
    assert fake.calls["get_app"] == 6


def test_backoff_is_exponential_with_full_jitter(clock, fake):
    sleeps = []
    fake.inject("get_app", Unavailable(503), probability=1.0)
    with FlyClient(token=TOKEN, transport=fake.transport(), clock=clock.now, sleep=sleeps.append,
                   limiter=RateLimiter.unlimited(), rng=random.Random(1)) as client:
        with pytest.raises(FlyAPIError):
            client.get_app("team-a")

    assert len(sleeps) == 5
    assert all(0 <= slept <= 0.5 * 2 ** attempt for attempt, slept in enumerate(sleeps))
    assert len(set(sleeps)) == 5


@pytest.mark.parametrize("status", [408, 500, 503])
def test_a_create_answered_408_or_5xx_is_ambiguous_and_never_sent_twice(fake, client, status):
    client.create_app("team-a", "acme", "team-a-net")
    fake.inject("create_machine", ResponseLost(status))

    with pytest.raises(FlyAPIError) as failure:
        client.create_machine("team-a", name="main", region="ord",
                              config=machine_config(metadata={"cloudctl_launch_id": "L1"}))

    assert (failure.value.http_status, failure.value.ambiguous) == (status, True)
    assert fake.calls["create_machine"] == 1
    adopted = client.list_machines("team-a", metadata={"cloudctl_launch_id": "L1"})
    assert [machine.name for machine in adopted] == ["main"]


@pytest.mark.parametrize("action", ["create_app", "create_volume"])
def test_app_and_volume_creates_are_ambiguous_too(fake, client, action):
    if action == "create_volume":
        client.create_app("team-a", "acme", "team-a-net")
    fake.inject(action, ResponseLost(408))

    with pytest.raises(FlyAPIError) as failure:
        if action == "create_app":
            client.create_app("team-a", "acme", "team-a-net")
        else:
            client.create_volume("team-a", "data", "ord", 10, GUEST)

    assert failure.value.ambiguous
    assert fake.calls[action] == 1


def test_a_429_on_a_create_is_retried(fake, client):
    client.create_app("team-a", "acme", "team-a-net")
    fake.inject("create_machine", Unavailable(429))

    machine = client.create_machine("team-a", name="main", region="ord", config=machine_config())

    assert machine.name == "main"
    assert fake.calls["create_machine"] == 2
    assert len(fake.machines) == 1


def failing_first(fake, error):
    """A transport whose first request fails with `error` before reaching the fake."""
    failed = []

    def handle(request):
        if not failed:
            failed.append(request)
            raise error("injected", request=request)
        return fake.transport().handle_request(request)

    return httpx.MockTransport(handle)


def test_a_create_that_never_connected_is_retried(clock, fake):
    with make_client(clock, failing_first(fake, httpx.ConnectError)) as client:
        app = client.create_app("team-a", "acme", "team-a-net")

    assert app.id and fake.calls["create_app"] == 1


def test_a_create_whose_connection_failed_after_sending_is_ambiguous(clock, fake):
    with make_client(clock, failing_first(fake, httpx.ReadTimeout)) as client:
        with pytest.raises(FlyAPIError) as failure:
            client.create_app("team-a", "acme", "team-a-net")

    assert failure.value.ambiguous and failure.value.http_status is None
    assert isinstance(failure.value.__cause__, httpx.ReadTimeout)


def test_a_read_whose_connection_failed_is_retried(clock, fake):
    with make_client(clock, failing_first(fake, httpx.ReadTimeout)) as client:
        assert client.list_apps("acme") == []


def test_the_limiter_delays_the_fourth_rapid_call_on_the_same_action_and_id():
    now = [100.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(clock=lambda: now[0], sleep=sleep)

    assert [limiter.acquire("start_machine", "m1") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("stop_machine", "m1") == 0 and limiter.acquire("start_machine", "m2") == 0
    assert limiter.acquire("start_machine", "m1") == pytest.approx(1.0)
    assert [limiter.acquire("get_machine", "m1") for _ in range(10)] == [0] * 10
    assert limiter.acquire("get_machine", "m1") == pytest.approx(0.2)
    assert sleeps == [pytest.approx(1.0), pytest.approx(0.2)]


def test_the_limiter_forgets_idle_buckets_but_not_busy_ones(monkeypatch):
    monkeypatch.setattr(RateLimiter, "_PRUNE_ABOVE", 2)
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0], sleep=lambda seconds: None)
    limiter.acquire("start_machine", "idle-1")
    limiter.acquire("start_machine", "idle-2")
    now[0] = 5.0  # both have refilled

    for _ in range(3):
        limiter.acquire("start_machine", "busy")

    assert set(limiter._buckets) == {("start_machine", "busy")}
    assert limiter.acquire("start_machine", "busy") == pytest.approx(1.0)


def test_the_limiter_queues_concurrent_callers_in_order():
    limiter = RateLimiter(rates={}, default=Rate(per_second=1, burst=3), clock=lambda: 0.0, sleep=lambda _: None)
    delays = []
    threads = [threading.Thread(target=lambda: delays.append(limiter.acquire("update_machine", "m1")))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(delays) == [0, 0, 0, 1, 2, 3]


def test_the_client_limiter_keeps_the_fake_from_ever_answering_429(clock, fake, client):
    machine = provision(client, volume=False)
    before = clock.now()

    for _ in range(4):
        client.stop("team-a", machine.id)

    assert clock.now() - before == pytest.approx(1.0)
    assert fake.throttled_count == 0


def test_wait_loops_over_408s_until_the_machine_gets_there(clock):
    fake = FakeFly(clock=clock, orgs=("acme",), latencies=Latencies(start=70))
    with make_client(clock, fake.transport()) as client:
        machine = provision(client, volume=False)
        result = client.wait("team-a", machine.id, "started", timeout=120)

    assert result.state == "started"
    assert fake.calls["wait_machine"] == 2  # a 408 after 60 s, then the answer


def test_wait_gives_up_at_its_deadline_with_a_408(clock, fake, client):
    client.create_app("team-a", "acme", "team-a-net")
    machine = client.create_machine("team-a", name="main", region="ord", config=machine_config(), skip_launch=True)
    before = clock.now()

    with pytest.raises(FlyAPIError) as failure:
        client.wait("team-a", machine.id, "started", timeout=90)

    assert failure.value.http_status == 408 and failure.value.request_id
    assert clock.now() - before == pytest.approx(90)
    assert fake.calls["wait_machine"] == 2


def test_wait_rides_out_404s_right_after_create(fake, client):
    client.create_app("team-a", "acme", "team-a-net")
    fake.inject("create_machine", NotVisible(seconds=3))
    machine = client.create_machine("team-a", name="main", region="ord", config=machine_config())

    assert client.wait("team-a", machine.id, "started").state == "started"
    assert fake.calls["wait_machine"] > 1


@pytest.mark.parametrize("envelope", [True, False], ids=["docs-envelope", "spec-flat"])
def test_leases_parse_in_both_shapes_and_nonces_are_enforced(clock, envelope):
    fake = FakeFly(clock=clock, orgs=("acme",), lease_envelope=envelope)
    with make_client(clock, fake.transport()) as client:
        machine = provision(client, volume=False)
        lease = client.acquire_lease("team-a", machine.id, 30, "deploy 1")
        assert isinstance(lease, Lease) and lease.nonce and lease.description == "deploy 1"
        assert lease.expires_at == int(clock.now()) + 30

        with pytest.raises(FlyAPIError) as held:
            client.acquire_lease("team-a", machine.id, 30, "deploy 2")
        with pytest.raises(FlyAPIError) as unleased_stop:
            client.stop("team-a", machine.id)
        client.stop("team-a", machine.id, nonce=lease.nonce)

    assert held.value.http_status == 409 and unleased_stop.value.http_status == 409
    assert fake.refused == []


def test_an_update_with_a_stale_version_fails_without_retrying(fake, client):
    machine = provision(client, volume=False)
    client.update_machine("team-a", machine.id, config=machine_config(), current_version=machine.instance_id)

    with pytest.raises(FlyAPIError) as stale:
        client.update_machine("team-a", machine.id, config=machine_config(), current_version=machine.instance_id)

    assert stale.value.http_status == 412
    assert fake.calls["update_machine"] == 2


def test_a_silent_revert_shows_as_a_different_version_after_the_wait(fake, client):
    machine = provision(client, volume=False)
    fake.inject("update_machine", SilentRevert())

    updated = client.update_machine("team-a", machine.id, config=machine_config(image=IMAGE + "-2"),
                                    current_version=machine.instance_id)
    settled = client.wait("team-a", machine.id, "started")

    assert settled.version == machine.instance_id != updated.instance_id


def test_a_full_host_is_reported_with_its_fly_status(fake, client):
    client.create_app("team-a", "acme", "team-a-net")
    volume = client.create_volume("team-a", "data", "ord", 10, GUEST)
    fake.inject("create_machine", HostFull())

    with pytest.raises(FlyAPIError) as full:
        client.create_machine("team-a", name="main", region="ord",
                              config=machine_config(mounts=[{"volume": volume.id, "path": "/data"}]))

    assert (full.value.http_status, full.value.status) == (412, "volume_placement_capacity")
    assert not full.value.ambiguous


def test_org_machines_are_collected_across_short_pages(clock):
    fake = FakeFly(clock=clock, orgs=("acme",), org_page_cap=2)
    with make_client(clock, fake.transport()) as client:
        client.create_app("team-a", "acme", "team-a-net")
        created = {client.create_machine("team-a", name=f"m{index}", region="ord", config=machine_config()).id
                   for index in range(5)}
        clock.sleep(fake.latencies.org_listing_lag)  # the listing is a point in time, a little behind
        listed = client.list_org_machines("acme", page_size=1000)

    assert {machine.id for machine in listed} == created
    assert fake.calls["list_org_machines"] == 3


@pytest.mark.parametrize(("call", "complaint"), [
    (lambda c: c.create_machine("a", name="m", region="ord", config={"env": {}}), "config.image"),
    (lambda c: c.create_machine("a", name="m", region="ord", config=machine_config(guest={"memory_mb": 1000})),
     "multiple of 256"),
    (lambda c: c.update_machine("a", "m", config=machine_config(), current_version=""), "current_version"),
    (lambda c: c.create_volume("a", "data", "ord", "10", GUEST), "size_gb"),
    (lambda c: c.create_volume("a", "data", "ord", 10, {"memory_mb": 100}), "compute.memory_mb"),
    (lambda c: c.create_app("a", "acme", "1-starts-with-a-digit"), "network"),
    (lambda c: c.wait("a", "m", "stopped"), "version"),
    (lambda c: c.wait("a", "m", "running"), "state"),
    (lambda c: c.acquire_lease("a", "m", 0, "x"), "ttl"),
])
def test_what_the_spec_does_not_mark_required_is_checked_before_sending(fake, client, call, complaint):
    with pytest.raises(ValueError, match=complaint):
        call(client)
    assert sum(fake.calls.values()) == 0


def test_over_real_http_on_localhost_from_many_threads():
    fake = FakeFly(orgs=("acme",), time_scale=0)
    url, stop = serve(fake)
    try:
        with FlyClient(base_url=url, token=TOKEN, timeout=5) as client:
            machine = provision(client)
            assert client.wait("team-a", machine.id, "started", timeout=5).state == "started"
            states = []
            threads = [threading.Thread(target=lambda: states.append(client.get_machine("team-a", machine.id).state))
                       for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert states == ["started"] * 8
        assert fake.refused == [] and fake.throttled_count == 0
    finally:
        stop()
