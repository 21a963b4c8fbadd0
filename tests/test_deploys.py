"""Fleet deploys against the spec-checking fake Machines API, on virtual time."""

import dataclasses

import pytest

from deploys.models import Deployment, DeploymentTarget
from deploys.plan import DeploymentRefused
from deploys.runner import run_deployment
from deploys.selectors import fleet_image
from deploys.services import start_deployment
from fakefly import FakeFly, ResponseLost, Unavailable
from instances.fleet import provision_fleet
from instances.lifecycle import stop_instance
from instances.models import Instance
from instances.provisioning import instance_for, provision

V1 = "registry.fly.io/cloudctl-team:v1"
V2 = "registry.fly.io/cloudctl-team:v2"
BAD = "registry.fly.io/cloudctl-team:broken"
Step = DeploymentTarget.Step


class HostileTenantsFly(FakeFly):
    """A tenant can break its own instance (a file on its volume its entrypoint chokes on): its Machine keeps
    serving until it restarts, then fails its service checks whatever the image."""

    def __init__(self, **options):
        super().__init__(**options)
        self.broken_since: dict[str, float] = {}

    def break_instance(self, machine_id: str) -> None:
        self.broken_since[machine_id] = self.clock.now()

    def _check_statuses(self, machine):
        statuses = super()._check_statuses(machine)
        if machine.updated_at > self.broken_since.get(machine.id, float("inf")):
            return [{**status, "status": "critical", "output": "the instance exits at start"} for status in statuses]
        return statuses


@pytest.fixture
def fake(clock):
    return HostileTenantsFly(clock=clock, orgs=("acme",), unhealthy_images=(BAD,))


@pytest.fixture
def fleet(fly, fake, make_team, transactional_db):
    """Eight teams on v1: five running, two stopped, one suspended (as scale-to-zero leaves them)."""
    teams = [make_team() for _ in range(8)]
    assert provision_fleet(teams, concurrency=4, actor="test").failed == {}
    for team in teams[5:7]:
        stop_instance(team, actor="test")
    suspended = instance_for(teams[7])
    fly.client.suspend(suspended.resources["app"], suspended.resources["machine"])
    fly.client.wait(suspended.resources["app"], suspended.resources["machine"], "suspended")
    return teams


def machine_of(fake, team):
    return fake.machine(instance_for(team).resources["machine"])


def crash(fake, clock, team):
    """The team's Machine fails (its process exited), as every read shows it from now on, the org-wide listing
    included once its lag has passed."""
    machine = machine_of(fake, team)
    machine.state, machine.updated_at = "failed", clock.now()
    machine.remember(clock.now())


def applied_updates(fake, team):
    """Updates Fly carried out on the team's Machine, finished or still settling (a retried request refused as
    stale is not one)."""
    machine = machine_of(fake, team)
    return (sum(1 for event in machine.events if event["type"] == "update")
            + sum(1 for transition in machine.transitions if transition.event == "update"))


def deploy(clock, image, **options):
    deployment = start_deployment(image, **{"concurrency": 3, **options}, actor="test")
    return run_deployment(deployment, sleep=clock.sleep, actor="test")


def test_a_good_image_reaches_every_team_and_stopped_machines_stay_stopped(fleet, fake, clock):
    states_before = {team.pk: machine_of(fake, team).state for team in fleet}
    deployment = deploy(clock, V2, canary=2)

    assert deployment.state == Deployment.State.SUCCEEDED and deployment.is_open is None
    for team in fleet:
        machine = machine_of(fake, team)
        assert machine.config["image"] == V2
        # Running ones restarted on v2; stopped and suspended ones were updated without being started.
        assert machine.state == ("started" if states_before[team.pk] == "started" else "stopped"), team.slug
        assert applied_updates(fake, team) == 1
    targets = list(deployment.targets.all())
    assert {target.step for target in targets} == {Step.UPDATED}
    assert {target.previous_image for target in targets} == {V1}
    assert set(Instance.objects.values_list("image", flat=True)) == {V2}
    # The canary is made of running teams: stopped ones would prove nothing about the image's health.
    canary = [target.team_id for target in targets if target.wave == 0]
    assert len(canary) == 2 and all(states_before[team_id] == "started" for team_id in canary)
    assert fake.refused == []


def test_new_teams_start_on_the_image_the_whole_fleet_got(fleet, fake, clock, make_team):
    deploy(clock, V2, slugs=[fleet[0].slug])
    assert fleet_image() == V1  # a deployment to some teams does not change what new teams get
    deploy(clock, V2)
    assert fleet_image() == V2
    newcomer = provision(make_team(), actor="test")
    assert newcomer.image == V2 and fake.machine(newcomer.resources["machine"]).config["image"] == V2


def test_a_bad_image_halts_after_the_canary_and_each_canary_team_gets_its_own_image_back(fly, fleet, fake, clock):
    # One team runs a hotfix image: rolling back must restore that one, not the fleet's usual image.
    hotfixed = fleet[0]
    deploy(clock, V1 + "-hotfix", slugs=[hotfixed.slug])
    updates_before = {team.pk: applied_updates(fake, team) for team in fleet}

    deployment = deploy(clock, BAD, canary=2)

    assert deployment.state == Deployment.State.HALTED and deployment.is_open is None
    canary = {target.team_id: target for target in deployment.targets.filter(wave=0)}
    assert hotfixed.pk in canary and len(canary) == 2
    for team in fleet:
        machine = machine_of(fake, team)
        if team.pk in canary:
            assert canary[team.pk].step == Step.ROLLED_BACK
            assert "not healthy" in canary[team.pk].error
            expected = V1 + "-hotfix" if team.pk == hotfixed.pk else V1
            assert (machine.config["image"], machine.state) == (expected, "started")
            assert fly.running_image(instance_for(team)) == instance_for(team).image == expected
        else:  # never touched
            assert applied_updates(fake, team) == updates_before[team.pk]
            assert machine.config["image"] == V1
    assert set(deployment.targets.exclude(wave=0).values_list("step", flat=True)) == {Step.PENDING}
    assert "2 rolled back" in deployment.message
    assert fake.refused == []


def test_a_team_the_image_fails_is_put_back_on_its_previous_image_at_once(fleet, fake, clock):
    running = [team for team in fleet if machine_of(fake, team).state == "started"]
    # Busy teams: none idles out while the failing updates before it take their 120 s of health timeout.
    fake.latencies = dataclasses.replace(fake.latencies, autostop_idle=None)
    deployment = deploy(clock, BAD, canary=1, max_failures=len(fleet))
    assert deployment.state == Deployment.State.COMPLETED_WITH_FAILURES, deployment.message
    for team in running:  # healthy again on the image they ran: the image failed them, they count
        target = deployment.targets.get(team=team)
        assert target.step == Step.FAILED and "not healthy" in target.error
        assert (machine_of(fake, team).config["image"], machine_of(fake, team).state) == (V1, "started")
        assert instance_for(team).image == V1
    assert fake.refused == []


def test_teams_unhealthy_before_the_update_are_skipped_and_never_count(fleet, fake, clock):
    crashed_before_the_plan, crashed_after_it = fleet[0], fleet[1]
    crash(fake, clock, crashed_before_the_plan)
    clock.sleep(fake.latencies.org_listing_lag)  # the org-wide listing the plan reads shows a moment ago
    deployment = start_deployment(V2, canary=1, concurrency=3, max_failures=0, actor="test")
    assert deployment.targets.get(team=crashed_after_it).wave == 0  # the canary: it ran when planned
    crash(fake, clock, crashed_after_it)

    deployment = run_deployment(deployment, sleep=clock.sleep, actor="test")

    assert deployment.state == Deployment.State.SUCCEEDED, deployment.message
    for team in (crashed_before_the_plan, crashed_after_it):
        target = deployment.targets.get(team=team)
        assert (target.step, target.error) == (Step.SKIPPED, "unhealthy before the update: it crashed")
        assert applied_updates(fake, team) == 0 and machine_of(fake, team).config["image"] == V1
    # Another running team took the skipped canary's place, and the rest of the fleet got the image.
    assert deployment.targets.filter(wave=0, step=Step.UPDATED, was_running=True).count() == 1
    assert deployment.targets.filter(step=Step.UPDATED).count() == len(fleet) - 2
    assert fake.refused == []


def test_a_hostile_canary_is_a_tenant_fault_and_the_rollout_goes_on(fleet, fake, clock):
    from teams.models import TeamEvent

    hostile = fleet[0]  # running, first: the canary
    fake.break_instance(machine_of(fake, hostile).id)

    deployment = deploy(clock, V2, canary=1, max_failures=0)

    assert deployment.state == Deployment.State.SUCCEEDED, deployment.message
    assert "1 tenant faults" in deployment.message
    fault = deployment.targets.get(team=hostile)
    assert (fault.step, fault.wave) == (Step.TENANT_FAULT, 0)
    on_new, on_previous = fault.error.split(f"\nand on its previous image {V1}: ")
    assert "the instance exits at start" in on_new and "the instance exits at start" in on_previous
    assert machine_of(fake, hostile).config["image"] == instance_for(hostile).image == V1
    assert TeamEvent.objects.filter(team=hostile, kind="deploy_tenant_fault", is_error=True).exists()
    assert deployment.targets.filter(wave=0, step=Step.UPDATED, was_running=True).count() == 1
    for team in fleet[1:]:
        assert machine_of(fake, team).config["image"] == V2
    assert fake.refused == []


def test_failures_under_the_threshold_complete_the_rollout(fleet, fake, clock):
    first = fleet[1]
    fake.inject("update_machine", Unavailable(status=400), calls=[2])  # a refusal, not a transient error
    deployment = deploy(clock, V2, canary=1, max_failures=1, concurrency=1)
    assert deployment.state == Deployment.State.COMPLETED_WITH_FAILURES
    failed = deployment.targets.get(step=Step.FAILED)
    assert "400" in failed.error and failed.team_id == first.pk
    assert deployment.targets.filter(step=Step.UPDATED).count() == len(fleet) - 1


@pytest.mark.parametrize("fault", [Unavailable(503), Unavailable(429), Unavailable(502), ResponseLost(status=408)],
                         ids=["503", "429", "502", "408-after-doing-it"])
def test_transient_api_errors_do_not_halt_a_healthy_rollout(fleet, fake, clock, fault):
    for action in ("get_machine", "update_machine", "acquire_lease", "release_lease", "wait_machine",
                   "list_machines"):
        fake.inject(action, fault, probability=0.3)
    deployment = deploy(clock, V2, canary=1, max_failures=0)
    assert deployment.state == Deployment.State.SUCCEEDED, list(deployment.targets.values_list("error", flat=True))
    for team in fleet:
        assert machine_of(fake, team).config["image"] == V2
        assert applied_updates(fake, team) == 1
    assert fake.refused == []


def test_only_one_deployment_is_open_at_a_time(fleet, clock):
    start_deployment(V2, actor="test")
    with pytest.raises(DeploymentRefused, match="still open"):
        start_deployment(V2 + "b", actor="test")


def test_unknown_teams_and_empty_images_are_refused_clearly(fleet):
    with pytest.raises(DeploymentRefused, match="no team with slug nope"):
        start_deployment(V2, slugs=["nope"], actor="test")
    with pytest.raises(DeploymentRefused, match="image is empty"):
        start_deployment("  ", actor="test")
    assert not Deployment.objects.exists()


def test_teams_not_provisioned_or_already_on_the_image_are_skipped_with_a_reason(fleet, clock, make_team):
    unprovisioned = make_team()
    deploy(clock, V2, slugs=[fleet[0].slug])
    deployment = deploy(clock, V2)
    skipped = dict(deployment.targets.filter(step=Step.SKIPPED).values_list("team_id", "error"))
    assert skipped[fleet[0].pk] == f"already on {V2}"
    assert "not provisioned" in skipped[unprovisioned.pk]
    assert deployment.state == Deployment.State.SUCCEEDED


def test_the_command_plans_runs_and_reports(fleet, fake, capsys):
    import signal

    from django.core.management import CommandError, call_command

    call_command("deploy", "--image", V2, "--all", "--canary", "2", "--dry-run")
    plan = capsys.readouterr().out
    assert f"would deploy {V2} to 8 team(s) in 2 wave(s)" in plan and "canary:" in plan
    assert not Deployment.objects.exists()

    handler_before = signal.getsignal(signal.SIGINT)
    call_command("deploy", "--image", V2, "--all", "--concurrency", "4")
    report = capsys.readouterr().out
    assert "8 updated" in report and "Succeeded" in report
    assert all(team.slug in report for team in fleet)  # up to 50 teams, the table lists each
    assert signal.getsignal(signal.SIGINT) is handler_before  # Ctrl-C is the caller's again

    fake.unhealthy_images.add(BAD)
    with pytest.raises(CommandError, match="halted") as halted:
        call_command("deploy", "--image", BAD, "--all")
    assert halted.value.returncode == 1
    with pytest.raises(CommandError, match="no deployment to resume"):
        call_command("deploy", "--resume")
    with pytest.raises(CommandError, match="either --teams or --all"):
        call_command("deploy", "--image", V2)


def test_a_team_destroyed_after_the_plan_is_skipped_with_the_reason(fleet, clock):
    from instances.lifecycle import destroy_instance

    deployment = start_deployment(V2, concurrency=2, actor="test")
    destroy_instance(fleet[3], actor="test")
    deployment = run_deployment(deployment, sleep=clock.sleep, actor="test")
    assert deployment.state == Deployment.State.SUCCEEDED
    target = deployment.targets.get(team=fleet[3])
    assert (target.step, target.error) == (Step.SKIPPED, "instance is destroyed now")
    assert deployment.targets.filter(step=Step.UPDATED).count() == len(fleet) - 1
