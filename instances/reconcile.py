"""One level-triggered reconciler for every backend: compare what the backend sees of an instance with what the
database says it should be, repair what is safe, report the rest, and say when to look again.

`reconcile_instance` does one instance, as controller-runtime's `Reconcile` does one object and returns when to
requeue it. The rules, for every backend alike: a team a live provisioning run or deployment holds is left to
it; a machine gone is provisioned again, and so is a team whose provisioning failed on something passing (the
platform unavailable, its Machine held by someone else); a crash is recorded and restarted through provisioning,
until it crashes `CRASH_LOOP_LIMIT` times in `CRASH_LOOP_WINDOW` and is left failed; an instance that should run but
stopped is restarted unless its platform starts it on demand; extra machines are destroyed, a wrong image is
updated back, a secret behind the team's token is pushed. What a backend cannot do (see `MachineBackend`'s
optional methods) is skipped. Repairs reuse provisioning and the backend's operations: a repair is what
provisioning would have done.

`reconcile` is the fleet pass (`manage.py reconcile`, the periodic task): the backends' fleet-wide inventories
(stale leases, orphan apps) and `reconcile_instance` for every instance, with one bulk read per backend.
`manage.py dev` runs the same loop every few seconds for its local instances (`supervision.supervise`).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from teams import timeline
from teams.models import Team, TeamEvent

from . import rollouts
from .backends import BackendError, MachineBackend, Observation, ObservedState
from .fleet import provision_fleet
from .holders import claim_is_live
from .machines import get_backend, observe_by_backend
from .models import Instance
from .provisioning import provision

logger = logging.getLogger(__name__)

REPAIRED, REPORTED, PRUNED = "repaired", "needs a decision", "pruned"
CRASH_LOOP_LIMIT = 3
CRASH_LOOP_WINDOW = timedelta(minutes=10)
# When to look at an instance again: soon while something is under way (provisioning, a restart, a deployment,
# a repair to verify), later when it is as it should be.
REQUEUE_SOON = timedelta(seconds=30)
REQUEUE_LATER = timedelta(minutes=5)

# How a restart goes through provisioning: called as restart(team, actor=...). `provision` runs it here;
# `manage.py dev` queues it for the worker; the fleet pass gathers them to provision them concurrently.
Restart = Callable[..., object]


@dataclass(frozen=True)
class Finding:
    # missing_machine, provisioning_failed, crashed, exited, crash_loop, wrong_image, secret_behind, duplicate_machine,
    # stale_lease, orphan_app, provisioning
    kind: str
    subject: str
    outcome: str
    detail: str = ""


@dataclass
class ReconcileResult:
    team: str  # the team's slug
    findings: list[Finding] = field(default_factory=list)
    # When to reconcile the instance again; None once it is destroyed (nothing left to look at).
    requeue_after: timedelta | None = REQUEUE_LATER
    observed: ObservedState | None = None  # None when it was not looked at (left to a run that holds it)
    restarted: bool = False  # a restart through provisioning was run or queued


def reconcile_instance(instance_id: int, *, actor: str, dry_run: bool = False,
                       observation: Observation | None = None, restart: Restart = provision) -> ReconcileResult:
    """Reconcile one instance as `actor` (on each timeline event); `observation` is what a bulk read already saw
    of it (else it is read now). With `dry_run`, report what would be done and change nothing."""
    instance = Instance.objects.select_related("team").get(pk=instance_id)
    result = _left_alone(instance)
    if result is not None:
        return result
    backend = get_backend(instance.backend)
    return _reconcile(instance, backend, observation or backend.inspect(instance), actor=actor, dry_run=dry_run,
                      restart=restart)


def reconcile(*, actor: str, prune: bool = False, dry_run: bool = False, concurrency: int = 8) -> list[Finding]:
    """The fleet pass as `actor`: every backend's inventories, then every instance, the ones to restart provisioned
    `concurrency` at a time. Orphans are reported; with `prune` they are deleted."""
    instances = list(Instance.objects.select_related("team").exclude(
        Q(desired_state__in=[Instance.State.DESTROYED, Instance.State.DESTROYING]) | Q(state=Instance.State.DESTROYED)))
    backends = [get_backend(path) for path in sorted({settings.MACHINE_BACKEND, *(i.backend for i in instances)})]
    findings: list[Finding] = []
    for backend in backends:
        findings += _release_stale_leases(backend, dry_run)

    to_restart: list[Team] = []
    looked_at = [instance for instance in instances if _left_alone(instance) is None]
    for group, observed in observe_by_backend(looked_at, read="inspect_many"):
        if isinstance(observed, BackendError):
            raise observed
        for instance in group:
            findings += _reconcile(instance, get_backend(instance.backend), observed[instance.team_id], actor=actor,
                                   dry_run=dry_run, restart=lambda team, actor: to_restart.append(team)).findings

    for backend in backends:
        findings += _orphans(backend, prune, dry_run)
        findings += _public_addresses(backend)
    if to_restart and not dry_run:
        provisioned = provision_fleet(to_restart, actor=actor, concurrency=concurrency)
        findings += [Finding("provisioning", f"team {team_id}", REPORTED, f"re-provisioning failed: {why}")
                     for team_id, why in provisioned.failed.items()]
    for finding in findings:
        logger.info("reconcile %s %s: %s %s", finding.kind, finding.subject, finding.outcome, finding.detail)
    return findings


def _left_alone(instance: Instance) -> ReconcileResult | None:
    """The result for an instance reconcile must not touch now, or None to go on."""
    result = ReconcileResult(instance.team.slug)
    if Instance.State.DESTROYED in (instance.state, instance.desired_state) or (
            instance.desired_state == Instance.State.DESTROYING):
        result.requeue_after = None
        return result
    # A live provisioning run holds the team, a restart waits for the worker, or a live deployment is stopping and
    # starting it (a restart under it would race its own start and count its failed starts toward a crash loop).
    if (claim_is_live(instance.claimed_by, instance.claimed_until) or instance.state == Instance.State.PENDING
            or Instance.objects.filter(pk=instance.pk, team_id__in=rollouts.team_ids_being_deployed()).exists()):
        result.requeue_after = REQUEUE_SOON
        return result
    if "machine" not in instance.completed_steps and not _failed_for_now(instance):
        return result  # never had a machine: provisioning's to make, when someone asks for it
    return None


def _failed_for_now(instance: Instance) -> bool:
    """Whether the instance is FAILED by a provisioning run that met something a retry clears (provisioning marks it
    `retryable`), not by a crash loop or a definite error, and should run: nothing else would try it again."""
    if instance.state != Instance.State.FAILED or instance.desired_state != Instance.State.RUNNING:
        return False
    last_failure = TeamEvent.objects.filter(  # the newest first
        team_id=instance.team_id, kind__in=[timeline.Kind.PROVISIONING_FAILED, timeline.Kind.CRASH_LOOP]).first()
    return (last_failure is not None and last_failure.kind == timeline.Kind.PROVISIONING_FAILED
            and last_failure.data.get("retryable") is True)


def _reconcile(instance: Instance, backend: MachineBackend, observation: Observation, *, actor: str, dry_run: bool,
               restart: Restart) -> ReconcileResult:
    team, state = instance.team, observation.state
    result = ReconcileResult(team.slug, observed=state)
    should_run = instance.state == instance.desired_state == Instance.State.RUNNING
    if _failed_for_now(instance):
        _restart(instance, backend, result, Finding("provisioning_failed", team.slug, REPAIRED,
                                                    f"failed on something passing ({instance.last_error})"),
                 actor=actor, dry_run=dry_run, restart=restart)
    elif state is ObservedState.MISSING:
        _restart(instance, backend, result, Finding("missing_machine", team.slug, REPAIRED, "machine gone"),
                 actor=actor, dry_run=dry_run, restart=restart)
    elif state is ObservedState.CRASHED and should_run:
        _crashed(instance, backend, result, actor=actor, dry_run=dry_run, restart=restart)
    elif (state is ObservedState.STOPPED and should_run and not backend.starts_on_demand
          # Restarting an instance that scaled to zero would undo it: a request wakes it.
          and not instance.scaled_to_zero):
        if not dry_run:
            timeline.record(team, timeline.Kind.EXITED, f"instance {state.value}; restarting", actor=actor,
                            data={"observed": state.value})
        _restart(instance, backend, result, Finding("exited", team.slug, REPAIRED, "stopped"), actor=actor,
                 dry_run=dry_run, restart=restart)
    else:
        _repair(instance, backend, observation, result, actor=actor, dry_run=dry_run)
    return result


def _crashed(instance: Instance, backend: MachineBackend, result: ReconcileResult, *, actor: str, dry_run: bool,
             restart: Restart) -> None:
    """A crash loop is counted from the timeline's CRASHED events: their kind, never their message."""
    team = instance.team
    if not dry_run:
        timeline.record(team, timeline.Kind.CRASHED, f"instance crashed; last log lines:\n{_log_tail(backend, instance)}",
                        actor=actor, data={"observed": ObservedState.CRASHED.value}, is_error=True)
    recent = TeamEvent.objects.filter(team=team, kind=timeline.Kind.CRASHED,
                                      created_at__gte=timezone.now() - CRASH_LOOP_WINDOW).count()
    if dry_run:
        recent += 1  # the crash just seen, which a dry run does not record
    if recent < CRASH_LOOP_LIMIT:
        _restart(instance, backend, result, Finding("crashed", team.slug, REPAIRED, "crashed"), actor=actor,
                 dry_run=dry_run, restart=restart)
        return
    why = f"crashed {recent} times in {CRASH_LOOP_WINDOW.total_seconds() / 60:.0f} minutes"
    result.findings.append(Finding("crash_loop", team.slug, REPORTED, "left failed"))
    if not dry_run:
        instance.state, instance.last_error = Instance.State.FAILED, why
        instance.save(update_fields=["state", "last_error", "updated_at"])
        timeline.record(team, timeline.Kind.CRASH_LOOP, "not restarting: " + why, actor=actor, is_error=True,
                        data={"crashes": recent, "window_seconds": CRASH_LOOP_WINDOW.total_seconds()})


def _restart(instance: Instance, backend: MachineBackend, result: ReconcileResult, finding: Finding, *, actor: str,
             dry_run: bool, restart: Restart) -> None:
    """Provision the instance again (its steps adopt what exists and make or start the rest)."""
    result.findings.append(Finding(finding.kind, finding.subject, finding.outcome,
                                   f"{finding.detail}: provisioning again"))
    result.requeue_after = REQUEUE_SOON
    if dry_run:
        return
    if result.observed is ObservedState.MISSING:
        instance.resources = backend.forget_machine(instance.resources)
    instance.state = Instance.State.PENDING
    instance.save(update_fields=["resources", "state", "updated_at"])
    result.restarted = True
    try:
        restart(instance.team, actor=actor)
    except Exception as error:  # recorded on the instance by provisioning; reported here, tried again next pass
        result.findings.append(Finding("provisioning", instance.team.slug, REPORTED,
                                       f"re-provisioning failed: {error}"))


def _repair(instance: Instance, backend: MachineBackend, observation: Observation, result: ReconcileResult, *,
            actor: str, dry_run: bool) -> None:
    """The machine is there: no extra ones, the image the database names, the secret of the current token."""
    team = instance.team
    for machine_id in observation.extra_machines:
        result.findings.append(Finding("duplicate_machine", f"{team.slug}/{machine_id}", REPAIRED, "destroyed"))
        if not dry_run:
            backend.remove_machine(instance, machine_id)
    if observation.image is not None and observation.image != instance.image:
        result.findings.append(Finding("wrong_image", team.slug, REPAIRED, f"{observation.image} -> {instance.image}"))
        if not dry_run:
            instance.resources.update(backend.update(instance, instance.image))
            timeline.record(team, timeline.Kind.RECONCILED, f"machine moved back to {instance.image}", actor=actor,
                            data={"finding": "wrong_image", "from": observation.image, "to": instance.image})
    try:
        held = backend.secret_generation(instance)
    except NotImplementedError:  # the instance gets its token when it starts: a restart brings a new one
        held = team.token_generation
    if held != team.token_generation:
        result.findings.append(Finding("secret_behind", team.slug, REPAIRED,
                                       f"generation {held} -> {team.token_generation}"))
        if not dry_run:
            instance.resources.update(backend.push_secret(instance))
            timeline.record(team, timeline.Kind.RECONCILED, "app secret updated to the current token", actor=actor,
                            data={"finding": "secret_behind", "generation": team.token_generation})
    if result.findings:
        result.requeue_after = REQUEUE_SOON  # look again to see the repair hold
        if not dry_run:
            instance.save(update_fields=["resources", "updated_at"])


def _log_tail(backend: MachineBackend, instance: Instance) -> str:
    try:
        return backend.log_tail(instance)
    except NotImplementedError:
        return "(this backend keeps no log)"


def _release_stale_leases(backend: MachineBackend, dry_run: bool) -> list[Finding]:
    """Leases we took whose holder died (or that expired) are released with their recorded nonce."""
    try:
        stale = backend.release_stale_leases(dry_run=dry_run)
    except NotImplementedError:
        return []
    return [Finding("stale_lease", f"{lease.app}/{lease.machine_id}", REPAIRED, f"left by {lease.holder}")
            for lease in stale]


def _orphans(backend: MachineBackend, prune: bool, dry_run: bool) -> list[Finding]:
    """Apps named like ours whose team does not exist, or whose instance was destroyed."""
    live_teams = set(Instance.objects.exclude(state=Instance.State.DESTROYED).values_list("team_id", flat=True))
    live_teams |= set(Team.objects.filter(instance__isnull=True).values_list("pk", flat=True))
    try:
        orphans = backend.orphans(live_teams)
    except NotImplementedError:
        return []
    findings = []
    for name in orphans:
        if prune and not dry_run:
            backend.delete_orphan(name)
            findings.append(Finding("orphan_app", name, PRUNED, "deleted"))
        else:
            findings.append(Finding("orphan_app", name, REPORTED, "no team: run with --prune to delete"))
    return findings


def _public_addresses(backend: MachineBackend) -> list[Finding]:
    """Team resources reachable from the internet without the router: reported, for an operator to release (the
    backend never allocates one, so someone did on purpose or by mistake)."""
    try:
        exposed = backend.public_addresses()
    except NotImplementedError:
        return []
    return [Finding("public_ip", name, REPORTED,
                    f"{', '.join(addresses)}: a team is reached only through the router; release them")
            for name, addresses in sorted(exposed.items())]
