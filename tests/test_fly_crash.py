"""Provisioning killed with SIGKILL at random points, then restarted, still ends with exactly one of each.

A real `manage.py provision --all --now` process talks over HTTP to the fake Machines API (20% faults of
every kind) and shares this test's database file; it is killed at random moments and started again until
every team runs.
"""

import random
import signal
import subprocess

import pytest

from fakefly import FakeFly, NotVisible, ResponseLost, Unavailable, serve
from instances.models import Instance

from .fly_processes import ORG, manage_process
from .test_fly_backend import app_name, assert_one_of_each_per_team

TEAMS = 200
KILLS = 6


@pytest.fixture
def fake_server():
    fake = FakeFly(orgs=(ORG,), time_scale=0.02, seed=7)
    for action in ("create_app", "create_volume", "create_machine", "set_secrets", "get_machine",
                   "list_machines", "list_volumes", "get_app"):
        fake.inject(action, Unavailable(503), probability=0.2)
    for action in ("create_app", "create_volume", "create_machine"):
        fake.inject(action, ResponseLost(status=408), probability=0.2)
    fake.inject("create_machine", NotVisible(seconds=1), probability=0.2)
    url, stop = serve(fake)
    yield fake, url
    stop()


def provisioning_process(url, tmp_path):
    return manage_process(url, tmp_path, "provision", "--all", "--now", "--concurrency", "8")


def test_sigkill_at_random_points_then_restart(fake_server, make_team, transactional_db, tmp_path):
    fake, url = fake_server
    teams = [make_team() for _ in range(TEAMS)]
    rng = random.Random(42)
    kills = 0
    for _ in range(KILLS):
        process = provisioning_process(url, tmp_path)
        try:
            process.wait(timeout=rng.uniform(0.5, 4.0))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
    running_before_final = Instance.objects.filter(state=Instance.State.RUNNING).count()
    for _ in range(3):  # finish: a run that is not interrupted (retried if faults outlast its attempts)
        process = provisioning_process(url, tmp_path)
        output = process.communicate(timeout=300)[0].decode()
        if process.returncode == 0:
            break
    assert process.returncode == 0, output[-3000:]

    assert kills >= 3, "the test must really interrupt provisioning"
    assert running_before_final < TEAMS, "some teams must have been left half-made by the kills"
    assert Instance.objects.filter(state=Instance.State.RUNNING).count() == TEAMS
    assert_one_of_each_per_team(fake, [team.pk for team in teams])
    assert set(fake.apps) == {app_name(team.pk) for team in teams}
