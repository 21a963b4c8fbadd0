"""The Fly backend and provisioning state machine against the spec-checking fake Machines API."""
# The `fly` fixture's backend is the one get_backend() returns, so provisioning and reconcile use it too.

import dataclasses
import random
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from fakefly import FakeFly, HostFull, NotVisible, ResponseLost, SilentRevert, Unavailable
from flyapi import FlyClient, RateLimiter
from instances.backends import BackendError, ObservedState
from instances.backends.base import LeaseLedger, LeaseRecord
from instances.backends.fly import FlyBackend
from instances.specs import InstanceSpec
from instances.fleet import provision_fleet
from instances.models import Instance
from instances.provisioning import instance_for, provision

ORG = "acme"


def app_name(team_id):
    """A team's app under the default app prefix (CLOUDCTL_FLY_APP_PREFIX)."""
    return f"cloudctl-team-{team_id}"


# An app name of ours that another org holds; no team's (ids start at 1), whatever a database's sequences reached.
FOREIGN_APP = "cloudctl-team-0"


@pytest.fixture
def fake(clock):
    return FakeFly(clock=clock, orgs=(ORG,), foreign_apps=(FOREIGN_APP,))


def live(records):
    return [r for r in records if r.state not in ("destroyed", "destroying")]


def assert_one_of_each_per_team(fake, team_ids):
    apps = {name for name in fake.apps if name != FOREIGN_APP}
    assert apps == {app_name(team_id) for team_id in team_ids}
    for team_id in team_ids:
        app = app_name(team_id)
        assert len(live(v for v in fake.volumes.values() if v.app_name == app)) == 1, app
        assert len(live(m for m in fake.machines.values() if m.app_name == app)) == 1, app
    assert fake.refused == []


def test_provisioning_makes_one_app_volume_and_machine(fly, fake, make_team):
    team = make_team()
    instance = provision(team, actor="test")
    assert instance.state == Instance.State.RUNNING
    assert instance.completed_steps == ["app", "secret", "volume", "launch", "machine", "started"]
    app = fake.apps[app_name(team.pk)]
    assert app.network == f"{app_name(team.pk)}-net"
    machine = fake.machine(instance.resources["machine"])
    assert machine.state == "started"
    config = machine.config
    assert config["metadata"] == {"cloudctl_team": str(team.pk), "cloudctl_launch_id": instance.resources["launch_id"]}
    assert config["restart"]["policy"] == "on-failure"
    service = config["services"][0]
    assert (service["autostart"], service["autostop"], service["min_machines_running"]) == (True, True, 0)
    assert config["mounts"] == [{"volume": instance.resources["volume"], "path": "/data"}]
    assert "CLOUDCTL_TOKEN" not in config["env"]  # the token is an app secret, never in env
    assert "CLOUDCTL_TOKEN" in fake.apps[app_name(team.pk)].secrets
    assert_one_of_each_per_team(fake, [team.pk])


def test_rerunning_provisioning_changes_nothing(fly, fake, make_team):
    team = make_team()
    provision(team, actor="test")
    creates = {action: fake.calls[action] for action in ("create_app", "create_volume", "create_machine")}
    provision(team, actor="test")
    assert {action: fake.calls[action] for action in creates} == creates
    assert_one_of_each_per_team(fake, [team.pk])


def test_an_app_name_taken_by_another_org_is_a_clear_failure(fly, fake, make_team, settings):
    team = make_team()
    settings.FLY_APP_PREFIX = "cloudctl"
    fake.foreign_apps.add(app_name(team.pk))
    with pytest.raises(BackendError, match="taken by another Fly organization"):
        provision(team, actor="test")
    assert instance_for(team).state == Instance.State.FAILED


def test_an_app_left_by_our_earlier_attempt_is_adopted(fly, fake, make_team):
    team = make_team()
    fly.client.create_app(app_name(team.pk), ORG, f"{app_name(team.pk)}-net")
    assert provision(team, actor="test").state == Instance.State.RUNNING
    assert_one_of_each_per_team(fake, [team.pk])


@pytest.mark.parametrize("action", ["create_app", "create_volume", "create_machine"])
def test_an_ambiguous_create_is_resolved_by_looking_not_by_creating_twice(fly, fake, make_team, action):
    team = make_team()
    fake.inject(action, ResponseLost(status=408), calls=[1])
    assert provision(team, actor="test").state == Instance.State.RUNNING
    assert_one_of_each_per_team(fake, [team.pk])


def test_an_ambiguous_machine_create_not_yet_visible_is_still_found(fly, fake, make_team):
    team = make_team()
    fake.inject("create_machine", NotVisible(seconds=5), calls=[1])
    fake.inject("create_machine", ResponseLost(status=503), calls=[1])
    assert provision(team, actor="test").state == Instance.State.RUNNING
    assert fake.calls["create_machine"] == 1
    assert_one_of_each_per_team(fake, [team.pk])


def test_a_full_host_fails_with_its_reason(fly, fake, make_team):
    team = make_team()
    fake.inject("create_machine", HostFull(), calls=[1])
    with pytest.raises(BackendError, match="no room for the machine"):
        provision(team, actor="test")
    assert "no room" in instance_for(team).last_error
    assert provision(team, actor="test").state == Instance.State.RUNNING  # a later run succeeds


def test_two_hundred_teams_with_twenty_percent_faults_of_every_kind(fly, fake, make_team, transactional_db):
    teams = [make_team() for _ in range(200)]
    for action in ("create_app", "create_volume", "create_machine", "set_secrets", "get_machine",
                   "list_machines", "list_volumes", "wait_machine", "get_app"):
        fake.inject(action, Unavailable(503), probability=0.2)
    for action in ("create_app", "create_volume", "create_machine"):
        fake.inject(action, ResponseLost(status=408), probability=0.2)
    fake.inject("create_machine", NotVisible(seconds=3), probability=0.2)
    result = provision_fleet(teams, concurrency=1, attempts=10, actor="test")
    assert result.failed == {}
    assert Instance.objects.filter(state=Instance.State.RUNNING).count() == 200
    assert_one_of_each_per_team(fake, [team.pk for team in teams])


def test_observe_maps_machine_states(fly, fake, make_team):
    team = make_team()
    instance = provision(team, actor="test")
    assert fly.observe(instance) is ObservedState.RUNNING
    fly.stop(instance)
    assert fly.observe(instance) is ObservedState.STOPPED
    fly.client.destroy_machine(instance.resources["app"], instance.resources["machine"], force=True)
    assert fly.observe(instance) is ObservedState.MISSING


def test_update_keeps_a_stopped_machine_stopped(fly, fake, make_team):
    instance = provision(make_team(), actor="test")
    fly.stop(instance)
    fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    machine = fake.machine(instance.resources["machine"])
    assert (machine.config["image"], machine.state) == ("registry.fly.io/cloudctl-team:v2", "stopped")


def test_update_of_a_machine_autostop_is_stopping_keeps_it_down(fly, fake, make_team, clock):
    """Fly's proxy stops an idle Machine on its own: one seen `stopping` is updated without a launch, as flyctl
    decides `skip_launch` (only started, starting or failed Machines are launched)."""
    import dataclasses

    instance = provision(make_team(), actor="test")
    fake.latencies = dataclasses.replace(fake.latencies, stop=20.0)  # Litestream's last upload on SIGTERM
    clock.sleep(fake.latencies.autostop_idle + 1)
    assert fake.machine(instance.resources["machine"]).state == "stopping"
    fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    clock.sleep(fake.latencies.update)
    machine = fake.machine(instance.resources["machine"])
    assert (machine.config["image"], machine.state) == ("registry.fly.io/cloudctl-team:v2", "stopped")


def test_update_of_a_machine_autostart_is_waking_launches_it(fly, fake, make_team, clock):
    instance = provision(make_team(), actor="test")
    fly.stop(instance)
    fake.proxy_request(instance.resources["app"])  # a visitor: the proxy starts it
    assert fake.machine(instance.resources["machine"]).state == "starting"
    fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    machine = fake.machine(instance.resources["machine"])
    assert (machine.config["image"], machine.state) == ("registry.fly.io/cloudctl-team:v2", "started")


def test_update_detects_a_silent_revert(fly, fake, make_team):
    instance = provision(make_team(), actor="test")
    fake.inject("update_machine", SilentRevert(), calls=[1])
    with pytest.raises(BackendError, match="reverted"):
        fly.update(instance, "registry.fly.io/cloudctl-team:v2")


def test_update_of_a_running_machine_waits_for_its_checks_and_is_not_repeated(fly, fake, make_team, clock):
    instance = provision(make_team(), actor="test")
    before = clock.now()
    fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    # The update's restart, then the checks' first run: started alone is not ready.
    assert clock.now() - before >= fake.latencies.update + fake.latencies.health
    machine = fake.machine(instance.resources["machine"])
    assert (machine.config["image"], machine.state) == ("registry.fly.io/cloudctl-team:v2", "started")
    fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    assert fake.calls["update_machine"] == 1
    assert fly.running_image(instance) == "registry.fly.io/cloudctl-team:v2"


def test_an_image_that_fails_its_health_checks_fails_the_update(fly, fake, make_team, settings):
    fake.unhealthy_images.add("registry.fly.io/cloudctl-team:bad")
    instance = provision(make_team(), actor="test")
    with pytest.raises(BackendError, match=r"not healthy after .*critical"):
        fly.update(instance, "registry.fly.io/cloudctl-team:bad")


def test_a_lease_left_by_a_dead_run_is_released_and_the_update_goes_on(fly, fake, make_team):
    from datetime import timedelta

    from django.utils import timezone

    from instances.models import MachineLease

    instance = provision(make_team(), actor="test")
    app, machine_id = instance.resources["app"], instance.resources["machine"]
    left = fly.client.acquire_lease(app, machine_id, 600, "a deploy killed with SIGKILL")
    MachineLease.objects.create(app=app, machine_id=machine_id, nonce=left.nonce, holder="elsewhere:1:dead",
                                expires_at=timezone.now() - timedelta(seconds=1))
    fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    assert fake.machine(machine_id).config["image"] == "registry.fly.io/cloudctl-team:v2"
    assert not MachineLease.objects.exists()


def dead_holder() -> str:
    """A holder id of ours (`holders.new_holder`'s form) naming a process of this host that has exited."""
    import socket
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}:0badf00d"


def test_a_lease_fly_granted_to_a_run_that_died_before_recording_it_is_released(fly, fake, make_team):
    """Killed between Fly's grant and the ledger's write (or the grant's answer lost with the run): the lease is in
    no ledger, but its description names its holder, which is gone (found by tests/test_claims_concurrency.py)."""
    instance = provision(make_team(), actor="test")
    app, machine_id = instance.resources["app"], instance.resources["machine"]
    fly.client.acquire_lease(app, machine_id, 600, f"cloudctl stop ({dead_holder()})")
    fly.stop(instance)
    assert fake.machine(machine_id).state == "stopped"


# Every purpose FlyBackend.lease is given: the description names the holder whatever the purpose's words.
PURPOSES = ["stop", "start", "secret update", "update to registry.fly.io/cloudctl-team:v2"]


@pytest.mark.parametrize("purpose", PURPOSES)
def test_provisioning_resumed_after_its_run_died_under_a_lease_goes_on(fly, fake, make_team, purpose):
    """A provisioning run killed while it brought the app's secret into the Machine it had just made (the machine
    step not yet saved), holding a lease Fly granted it and no ledger recorded: the run queued again releases the
    lease and finishes (found by tests/test_claims_concurrency.py, where the team was left failed)."""
    from instances.backends.fly import LEASE_DESCRIPTION

    team = make_team()
    instance = provision(team, actor="test")
    app, machine_id = instance.resources["app"], instance.resources["machine"]
    del instance.resources["machine_secrets_version"]
    instance.completed_steps = instance.completed_steps[:instance.completed_steps.index("machine")]
    instance.state = Instance.State.PROVISIONING
    instance.save()
    fly.client.acquire_lease(app, machine_id, 600, LEASE_DESCRIPTION.format(purpose=purpose, holder=dead_holder()))
    instance = provision(team, actor="test")
    assert instance.state == Instance.State.RUNNING
    assert instance.resources["machine_secrets_version"] == fake.apps[app].secrets_version
    assert fake.machine(machine_id).lease is None


def test_a_start_after_a_restart_killed_mid_stop_releases_the_stop_lease(fly, fake, make_team):
    """The worker restarting the team was killed with the stop's lease held; an operator's start (provisioning,
    whose start step changes the Machine too) releases it and starts the Machine."""
    from instances.backends.fly import LEASE_DESCRIPTION
    from instances.lifecycle import start_instance

    team = make_team()
    instance = provision(team, actor="test")
    app, machine_id = instance.resources["app"], instance.resources["machine"]
    lease = fly.client.acquire_lease(app, machine_id, 600, LEASE_DESCRIPTION.format(purpose="stop",
                                                                                     holder=dead_holder()))
    fly.client.stop(app, machine_id, nonce=lease.nonce)
    fly.client.wait(app, machine_id, "stopped", version=fake.machine(machine_id).instance_id, timeout=60)
    start_instance(team, actor="test")
    assert instance_for(team).state == Instance.State.RUNNING
    assert fake.machine(machine_id).state == "started"
    assert fake.machine(machine_id).lease is None


def test_a_stop_after_a_restart_killed_mid_stop_waits_until_the_machine_stopped(fly, fake, make_team):
    """The worker restarting the team was killed right after asking Fly to stop the Machine: the next stop finds it
    `stopping`, and returns only once it is stopped (else the start that follows waits for a `started` that a
    stopping Machine never reaches)."""
    from instances.backends.fly import LEASE_DESCRIPTION

    instance = provision(make_team(), actor="test")
    app, machine_id = instance.resources["app"], instance.resources["machine"]
    lease = fly.client.acquire_lease(app, machine_id, 600, LEASE_DESCRIPTION.format(purpose="stop",
                                                                                     holder=dead_holder()))
    fly.client.stop(app, machine_id, nonce=lease.nonce)
    assert fake.machine(machine_id).state == "stopping"
    fly.stop(instance)
    assert fake.machine(machine_id).state == "stopped"


def test_a_lease_left_by_a_run_on_another_machine_is_waited_out(fly, fake, make_team, clock):
    """Whether a holder on another host is alive cannot be told from here; dead, it no longer refreshes its lease,
    which lapses within one TTL: the operation waits that long before it gives up."""
    from instances.backends.fly import LEASE_DESCRIPTION

    instance = provision(make_team(), actor="test")
    app, machine_id = instance.resources["app"], instance.resources["machine"]
    fly.client.acquire_lease(app, machine_id, fly.lease_ttl,
                             LEASE_DESCRIPTION.format(purpose="stop", holder="elsewhere:4242:0badf00d"))
    before = clock.now()
    fly.stop(instance)
    assert fake.machine(machine_id).state == "stopped"
    assert clock.now() - before >= fly.lease_ttl - 1  # it did wait for the lapse, not take the Machine early


def test_a_lease_named_for_a_live_run_of_ours_is_left_to_it(fly, fake, make_team):
    import os
    import socket

    from instances.backends import BackendUnavailable

    instance = provision(make_team(), actor="test")
    app, machine_id = instance.resources["app"], instance.resources["machine"]
    fly.client.acquire_lease(app, machine_id, 600, f"cloudctl stop ({socket.gethostname()}:{os.getpid()}:0badf00d)")
    with pytest.raises(BackendUnavailable, match="409"):
        fly.stop(instance)


def test_a_lease_held_by_a_live_run_makes_the_update_retryable(fly, fake, make_team):
    from instances.backends import BackendUnavailable

    instance = provision(make_team(), actor="test")
    fly.client.acquire_lease(instance.resources["app"], instance.resources["machine"], 600, "someone else")
    with pytest.raises(BackendUnavailable, match="409"):
        fly.update(instance, "registry.fly.io/cloudctl-team:v2")


@pytest.mark.parametrize("operation", ["stop", "push_secret", "observe", "running_image"])
def test_every_operation_reports_a_platform_outage_as_retryable(fly, fake, make_team, operation):
    from instances.backends import BackendUnavailable

    team = make_team()
    instance = provision(team, actor="test")
    team.token_generation += 1  # so push_secret has something to push
    fake.inject("*", Unavailable(503), probability=1.0)
    with pytest.raises(BackendUnavailable, match="503"):
        getattr(fly, operation)(instance)


def test_a_stop_while_someone_else_holds_the_lease_is_retryable(fly, fake, make_team):
    from instances.backends import BackendUnavailable

    instance = provision(make_team(), actor="test")
    fly.client.acquire_lease(instance.resources["app"], instance.resources["machine"], 600, "someone else")
    with pytest.raises(BackendUnavailable, match="409"):
        fly.stop(instance)


@pytest.mark.parametrize(("operation", "slow"), [
    ("stop", {"stop": 45.0}),  # a process deaf to SIGTERM: killed at stop_config's 30 s
    ("update", {"update": 60.0}),  # a slow image pull and boot
])
def test_a_slow_operation_keeps_its_lease_to_the_end(fly, fake, make_team, operation, slow):
    import dataclasses

    from instances.models import MachineLease

    instance = provision(make_team(), actor="test")
    fake.latencies = dataclasses.replace(fake.latencies, **slow)
    if operation == "stop":
        fly.stop(instance)
    else:
        fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    assert fake.lapsed_leases == []  # refreshed all along: nobody else could have taken the Machine meanwhile
    assert fake.machine(instance.resources["machine"]).lease is None  # and released at the end
    assert not MachineLease.objects.exists()


def test_a_lease_that_cannot_be_refreshed_stops_the_operation_cleanly(fly, fake, make_team):
    import dataclasses

    from instances.backends import BackendUnavailable
    from instances.models import MachineLease

    instance = provision(make_team(), actor="test")
    fake.latencies = dataclasses.replace(fake.latencies, update=60.0)
    fake.inject("acquire_lease", Unavailable(404), calls=[2])  # the first refresh: the lease is gone
    with pytest.raises(BackendUnavailable, match="lease"):
        fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    assert fake.calls["update_machine"] == 1  # nothing more was changed without the lease
    assert not MachineLease.objects.exists()


def test_destroy_removes_compute_and_volume(fly, fake, make_team):
    team = make_team()
    instance = provision(team, actor="test")
    fly.destroy(instance)
    assert app_name(team.pk) not in fake.apps
    assert not live(m for m in fake.machines.values() if m.app_name == app_name(team.pk))


def test_a_lease_whose_answer_was_lost_is_adopted_not_waited_out(fly, fake, make_team, clock, settings):
    from instances.machines import get_backend

    settings.FLY_LEASE_TTL = 60  # longer than the update with its health gate takes, so waiting it out would show
    fly = get_backend("instances.backends.fly.FlyBackend")  # built again, with it
    instance = provision(make_team(), actor="test")
    fake.inject("acquire_lease", ResponseLost(status=408), calls=[1])
    before = clock.now()
    fly.update(instance, "registry.fly.io/cloudctl-team:v2")
    assert fake.machine(instance.resources["machine"]).config["image"] == "registry.fly.io/cloudctl-team:v2"
    assert clock.now() - before < settings.FLY_LEASE_TTL  # not blocked until the lost lease expired
    assert fake.machine(instance.resources["machine"]).lease is None  # and released afterwards


def test_a_restart_after_a_rotation_brings_the_new_token_into_the_machine(fly, fake, make_team):
    from instances.lifecycle import restart_instance
    from instances.services import rotate_token_and_restart
    from teams.tokens import team_token

    team = make_team()
    instance = provision(team, actor="test")
    app = fake.apps[instance.resources["app"]]
    first_version = fake.machine(instance.resources["machine"]).secrets_version
    rotate_token_and_restart(team, actor="test")
    restart_instance(team, actor="test")  # what the queued restart action runs
    machine = fake.machine(instance_for(team).resources["machine"])
    assert app.secrets["CLOUDCTL_TOKEN"].value == team_token(team)
    # Fly hands a Machine only the secrets of its create or last update: a plain stop and start would not do.
    assert machine.secrets_version == app.secrets_version > first_version
    assert machine.state == "started"
    # and it stays settled
    assert provision(team, actor="test").resources["machine_secrets_version"] == app.secrets_version
    assert fake.calls["update_machine"] == 1


@pytest.mark.parametrize("stopped", [False, True])
def test_an_image_update_right_after_a_rotation_boots_on_the_new_token(fly, fake, make_team, stopped):
    """Secrets reach hosts eventually: an update without `min_secrets_version` can boot on the previous
    version, the revoked token (flyctl passes the app's secrets version on every create and update)."""
    from instances.lifecycle import restart_instance
    from instances.services import rotate_token_and_restart

    team = make_team()
    provision(team, actor="test")
    rotate_token_and_restart(team, actor="test")
    restart_instance(team, actor="test")  # sets the new token and moves the Machine onto it
    instance = instance_for(team)
    if stopped:
        fly.stop(instance)
    fly.update(instance, "registry.fly.io/cloudctl-team:v2")  # a deploy, moments later
    machine = fake.machine(instance.resources["machine"])
    assert machine.secrets_version == fake.apps[instance.resources["app"]].secrets_version


def test_the_volume_and_machine_go_to_the_teams_region(fly, fake, make_team):
    team = make_team(region="ams")
    instance = provision(team, actor="test")
    assert fake.volumes[instance.resources["volume"]].region == "ams"
    assert fake.machine(instance.resources["machine"]).region == "ams"


class MemoryLeaseLedger(LeaseLedger):
    """A lease ledger in a dict: the Fly backend needs no database, only something that keeps its leases."""

    def __init__(self):
        self.leases: dict[tuple[str, str], LeaseRecord] = {}
        self.recorded: list[LeaseRecord] = []

    def new_holder(self):
        return f"memory:{len(self.recorded)}"

    def record(self, lease):
        self.leases[lease.app, lease.machine_id] = lease
        self.recorded.append(lease)

    def refresh(self, app, machine_id, nonce, expires_at):
        if (lease := self.leases.get((app, machine_id))) and lease.nonce == nonce:
            self.leases[app, machine_id] = dataclasses.replace(lease, expires_at=expires_at)

    def forget(self, app, machine_id, nonce):
        if (lease := self.leases.get((app, machine_id))) and lease.nonce == nonce:
            del self.leases[app, machine_id]

    def lookup(self, app, machine_id):
        return self.leases.get((app, machine_id))

    def abandoned(self):
        return [lease for lease in self.leases.values() if self.is_abandoned(lease)]

    def is_abandoned(self, lease):
        return lease.holder.startswith("dead:") or lease.expires_at <= datetime.now(timezone.utc)


def test_a_fly_backend_built_with_an_in_memory_ledger_works_without_the_database(fake, clock):
    """No `django_db` mark: any query fails this test. The backend gets its options and its ledger when built."""
    client = FlyClient(token="fly-token", transport=fake.transport(), clock=clock.now, sleep=clock.sleep,
                       rng=random.Random(0), limiter=RateLimiter(clock=clock.now, sleep=clock.sleep))
    spec = InstanceSpec(team_id=7, image="registry.fly.io/cloudctl-team:v1", region="ord", guest={"cpus": 1},
                        env={"CLOUDCTL_TEAM_ID": "7"}, secrets={"CLOUDCTL_TOKEN": "a-token"})
    ledger = MemoryLeaseLedger()
    fly = FlyBackend(client, ledger=ledger, org=ORG, app_prefix="cloudctl", teams_domain="teams.test",
                     volume_size_gb=1, start_timeout=120, visibility_grace=15, lease_ttl=13, health_timeout=120,
                     spec_for=lambda instance: spec)
    instance = SimpleNamespace(team_id=7, image=spec.image, resources={},
                               team=SimpleNamespace(slug="acme", token_generation=1))
    for step in fly.provisioning_steps():
        instance.resources.update(step.run(instance))
    assert instance.resources["url"] == "https://acme.teams.test/"
    assert_one_of_each_per_team(fake, [7])

    fly.stop(instance)  # under a lease, recorded in the ledger and forgotten once released
    assert fly.observe(instance) is ObservedState.STOPPED
    assert [lease.machine_id for lease in ledger.recorded] == [instance.resources["machine"]]
    assert ledger.leases == {}

    app, machine_id = instance.resources["app"], instance.resources["machine"]
    left = client.acquire_lease(app, machine_id, 3600, "a run that died")
    ledger.record(LeaseRecord(app, machine_id, left.nonce, "dead:1", datetime.now(timezone.utc)))
    assert [lease.nonce for lease in fly.release_stale_leases()] == [left.nonce]
    assert client.get_lease(app, machine_id) is None and ledger.leases == {}
