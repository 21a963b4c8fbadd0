"""reconcile finds and repairs each kind of drift, then finds nothing."""

import pytest
from django.core.management import call_command
from django.utils import timezone

from instances.models import Instance, MachineLease
from instances.provisioning import instance_for, provision
from instances.reconcile import PRUNED, REPAIRED, REPORTED, reconcile
from teams.tokens import rotate_team_token
from fakefly import Unavailable
from instances.backends import BackendError, BackendUnavailable

from .test_fly_backend import ORG, app_name, assert_one_of_each_per_team, fake, live  # noqa: F401


@pytest.fixture
def fleet(fly, fake, make_team, transactional_db):
    teams = [make_team() for _ in range(5)]
    for team in teams:
        provision(team, actor="test")
    return teams


def settle_listing(fake, clock):
    """The org-wide listing shows Machines as they were moments ago (a point in time): let it catch up."""
    clock.sleep(fake.latencies.org_listing_lag + fake.latencies.destroy)


def kinds(findings):
    return sorted((f.kind, f.outcome) for f in findings)


def test_a_healthy_fleet_has_no_drift(fleet, fake):
    assert reconcile(actor="test") == []


def test_each_kind_of_drift_is_found_repaired_and_gone_on_the_second_run(fleet, fly, fake, clock):
    deleted, old_image, leased, rotated = (instance_for(team) for team in fleet[:4])
    fly.client.destroy_machine(deleted.resources["app"], deleted.resources["machine"], force=True)
    fly.client.update_machine(old_image.resources["app"], old_image.resources["machine"],
                              config={**fake.machine(old_image.resources["machine"]).config, "image": "old:v0"},
                              current_version=fake.machine(old_image.resources["machine"]).instance_id)
    lease = fly.client.acquire_lease(leased.resources["app"], leased.resources["machine"], 3600, "interrupted run")
    MachineLease.objects.create(app=leased.resources["app"], machine_id=leased.resources["machine"],
                                nonce=lease.nonce, holder="this-host:999999999:dead", expires_at=timezone.now())
    rotate_team_token(rotated.team)
    fly.client.create_app("cloudctl-team-4242", ORG, "cloudctl-team-4242-net")
    settle_listing(fake, clock)

    findings = reconcile(actor="test")
    assert kinds(findings) == sorted([
        ("missing_machine", REPAIRED), ("wrong_image", REPAIRED), ("stale_lease", REPAIRED),
        ("secret_behind", REPAIRED), ("orphan_app", REPORTED)])
    assert reconcile(actor="test") == [f for f in findings if f.outcome == REPORTED]  # only the decision remains

    assert fake.machine(instance_for(fleet[1]).resources["machine"]).config["image"] == instance_for(fleet[1]).image
    assert fly.client.get_lease(leased.resources["app"], leased.resources["machine"]) is None
    assert instance_for(fleet[3]).resources["token_generation"] == 2
    assert all(instance_for(team).state == Instance.State.RUNNING for team in fleet)

    pruned = reconcile(prune=True, actor="test")
    assert kinds(pruned) == [("orphan_app", PRUNED)]
    clock.sleep(5)  # Fly finishes deleting an app after answering 202
    assert reconcile(actor="test") == []
    assert_one_of_each_per_team(fake, [team.pk for team in fleet])


def test_a_public_ip_on_a_team_app_is_reported_and_a_flycast_address_is_not(fleet, fly, fake):
    """A team is reached only through the router: an IP someone allocated to its app is a way around it."""
    exposed, flycast = (instance_for(team).resources["app"] for team in fleet[:2])
    address = fly.client.assign_ip(exposed, "shared_v4").ip
    fly.client.assign_ip(flycast, "private_v6", network=f"{flycast}-net")
    findings = reconcile(actor="test")
    assert [(f.kind, f.subject, f.outcome) for f in findings] == [("public_ip", exposed, REPORTED)]
    assert address in findings[0].detail
    fly.client.release_ip(exposed, address)
    assert reconcile(actor="test") == []


def test_a_duplicate_machine_is_destroyed(fleet, fly, fake, clock):
    instance = instance_for(fleet[0])
    machine = fake.machine(instance.resources["machine"])
    fly.client.create_machine(instance.resources["app"], name="stray", region="ord", config={
        "image": machine.config["image"], "metadata": {"cloudctl_team": str(fleet[0].pk)}})
    settle_listing(fake, clock)
    assert kinds(reconcile(actor="test")) == [("duplicate_machine", REPAIRED)]
    assert reconcile(actor="test") == []
    assert len(live(m for m in fake.machines.values() if m.app_name == app_name(fleet[0].pk))) == 1


def test_dry_run_changes_nothing(fleet, fly, fake, clock):
    instance = instance_for(fleet[0])
    fly.client.destroy_machine(instance.resources["app"], instance.resources["machine"], force=True)
    settle_listing(fake, clock)
    assert kinds(reconcile(dry_run=True, actor="test")) == [("missing_machine", REPAIRED)]
    assert kinds(reconcile(dry_run=True, actor="test")) == [("missing_machine", REPAIRED)]


def test_a_team_being_provisioned_is_left_alone(fleet, fly, fake):
    instance = instance_for(fleet[0])
    fly.client.destroy_machine(instance.resources["app"], instance.resources["machine"], force=True)
    from instances.provisioning import claim

    claim(instance)  # a live run in this very process
    assert reconcile(actor="test") == []


def test_the_command_prints_findings(fleet, fly, fake, capsys):
    fly.client.create_app("cloudctl-team-777", ORG, "cloudctl-team-777-net")
    call_command("reconcile")
    out = capsys.readouterr().out
    assert "orphan_app" in out and "cloudctl-team-777" in out and "1 needing a decision" in out


def test_periodic_reconcile_is_queued_and_reschedules_itself(fleet, fly, fake, capsys, settings):
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.all().delete()
    settings.RECONCILE_EVERY, settings.BACKUP_CHECK_EVERY, settings.AUDIT_PRUNE_EVERY = 300, 0, 0
    # The restore drills and the restores' tending have their own chains (tests/test_schedule.py).
    settings.DRILL_EVERY = settings.RESTORE_TEND_EVERY = 0
    call_command("schedule_periodic")
    assert "every 300 s" in capsys.readouterr().out
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--max-tasks", "1", verbosity=0)
    first, following = DBTaskResult.objects.order_by("enqueued_at")
    assert first.status == "SUCCESSFUL"
    assert following.status == "READY" and following.args_kwargs["args"] == [300]
    assert following.run_after > timezone.now()
    # Queued again (a release command on every deploy): the chain is not doubled.
    call_command("schedule_periodic")
    assert "already queued" in capsys.readouterr().out
    assert DBTaskResult.objects.filter(status="READY").count() == 1


def test_a_team_whose_provisioning_failed_on_something_passing_is_provisioned_again(fleet, fly, fake):
    """Its Machine taken (by a live run elsewhere) for longer than provisioning waits: nothing is wrong with the team,
    and nothing else would try again, so the next pass provisions it."""
    team = fleet[0]
    instance = instance_for(team)
    app, machine_id = instance.resources["app"], instance.resources["machine"]
    fly.stop(instance)
    taken = fly.client.acquire_lease(app, machine_id, 600, "a deploy on another machine")
    with pytest.raises(BackendUnavailable, match="409"):
        provision(team, actor="test")
    assert instance_for(team).state == Instance.State.FAILED
    fly.client.release_lease(app, machine_id, taken.nonce)
    assert kinds(reconcile(actor="test")) == [("provisioning_failed", REPAIRED)]
    assert instance_for(team).state == Instance.State.RUNNING
    assert fake.machine(machine_id).state == "started"


def test_a_team_whose_provisioning_failed_for_good_is_left_to_an_operator(fleet, fly, fake):
    team = fleet[0]
    instance = instance_for(team)
    fly.stop(instance)
    fake.inject("start_machine", Unavailable(400))
    with pytest.raises(BackendError, match="400"):
        provision(team, actor="test")
    assert reconcile(actor="test") == []
    assert instance_for(team).state == Instance.State.FAILED


def test_a_new_team_whose_provisioning_failed_on_something_passing_is_provisioned_again(fleet, fly, fake, make_team):
    """Fly unavailable for longer than the client retries, before the team had a Machine."""
    team = make_team()
    fake.inject("list_volumes", Unavailable(503), calls=range(1, 7))  # each of the client's 6 attempts at one call
    with pytest.raises(BackendUnavailable, match="503"):
        provision(team, actor="test")
    assert kinds(reconcile(actor="test")) == [("provisioning_failed", REPAIRED)]
    assert instance_for(team).state == Instance.State.RUNNING
    assert_one_of_each_per_team(fake, [t.pk for t in [*fleet, team]])
