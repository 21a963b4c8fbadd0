"""A real `manage.py deploy` process, interrupted with Ctrl-C and then killed with SIGKILL mid-wave, finished by
`--resume`: every team ends on the new image, updated exactly once, with no lease left behind.

The command talks over HTTP to the fake Machines API served from this test, and shares its database file.
"""

import signal
import time

import pytest

from deploys.models import Deployment, DeploymentTarget
from fakefly import FakeFly, serve
from instances import machines
from instances.fleet import provision_fleet
from instances.models import MachineLease
from instances.provisioning import instance_for

from .fly_processes import IMAGE as V1
from .fly_processes import ORG, manage_process

V2 = "registry.fly.io/cloudctl-team:v2"


@pytest.fixture
def fake_server(settings):
    fake = FakeFly(orgs=(ORG,), time_scale=0.2, seed=3)
    url, stop = serve(fake)
    settings.MACHINE_BACKEND = "instances.backends.fly.FlyBackend"
    settings.FLY_API_URL, settings.FLY_API_TOKEN, settings.FLY_ORG = url, "fly-test-token", ORG
    settings.INSTANCE_IMAGE = V1
    machines.get_backend.cache_clear()
    yield fake, url
    machines.get_backend.cache_clear()
    stop()


def deploy_process(url, tmp_path, *args):
    return manage_process(url, tmp_path, "deploy", *args, text=True)


def updated_count() -> int:
    return DeploymentTarget.objects.filter(step=DeploymentTarget.Step.UPDATED).count()


def wait_for_updates(process, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while updated_count() < at_least:
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the deployment made no progress"
        time.sleep(0.05)


def wait_for_an_update_in_flight(process, timeout: float = 60) -> None:
    """Until some team's update has begun and not ended (the workers can all be between two teams)."""
    deadline = time.monotonic() + timeout
    while not DeploymentTarget.objects.filter(step=DeploymentTarget.Step.UPDATING).exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no update in flight"
        time.sleep(0.01)


def live_leases(fake):
    now = time.time()
    return [machine.id for machine in fake.machines.values() if machine.lease and machine.lease.expires_at > now]


def applied_updates(fake, team) -> int:
    machine = fake.machine(instance_for(team).resources["machine"])
    return (sum(1 for event in machine.events if event["type"] == "update")
            + sum(1 for transition in machine.transitions if transition.event == "update"))


@pytest.mark.slow
def test_interrupt_then_sigkill_mid_wave_then_resume(fake_server, make_team, transactional_db, tmp_path):
    fake, url = fake_server
    teams = [make_team() for _ in range(24)]
    assert provision_fleet(teams, concurrency=12, actor="test").failed == {}

    # Ctrl-C: no new team starts, the ones in flight finish, their leases are released.
    process = deploy_process(url, tmp_path, "--image", V2, "--all", "--concurrency", "3")
    wait_for_updates(process, 4)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output[-3000:]
    deployment = Deployment.objects.get()
    assert deployment.state == Deployment.State.INTERRUPTED, output[-3000:]
    assert "stopping: letting the updates in flight finish" in output
    assert live_leases(fake) == [] and not MachineLease.objects.exists()
    assert not DeploymentTarget.objects.filter(step=DeploymentTarget.Step.UPDATING).exists()
    after_interrupt = updated_count()
    assert after_interrupt < len(teams)

    # SIGKILL in the middle of updates: leases and "updating" steps are left behind.
    process = deploy_process(url, tmp_path, "--resume")
    wait_for_updates(process, after_interrupt + 3)
    wait_for_an_update_in_flight(process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert updated_count() < len(teams)
    assert DeploymentTarget.objects.filter(step=DeploymentTarget.Step.UPDATING).exists()

    process = deploy_process(url, tmp_path, "--resume")
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output[-3000:]
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.SUCCEEDED
    assert updated_count() == len(teams)
    for team in teams:
        assert fake.machine(instance_for(team).resources["machine"]).config["image"] == V2
        assert applied_updates(fake, team) == 1, team.slug  # no team updated twice
    assert live_leases(fake) == [] and not MachineLease.objects.exists()
    assert fake.refused == []
