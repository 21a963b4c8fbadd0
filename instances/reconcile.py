"""Reconcile: compare what exists on Fly for our org with the database, repair what is safe, report the rest.

Safe at any time, also while provisioning runs: a team whose provisioning lease is held is left to that run,
and only resources whose team does not exist at all count as orphans. Repairs reuse the provisioning steps
and backend operations, so a repair is exactly what provisioning would have done.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from django.conf import settings
from django.db.models import Q
from django.utils import timezone as dj_timezone

from flyapi import FlyAPIError

from teams import timeline
from teams.models import Team

from .backends import BackendError, ObservedState, get_backend
from .backends.fly import GONE_STATES, FlyBackend, team_of_app
from .fleet import provision_fleet
from .holders import holder_is_gone
from .models import Instance, MachineLease

logger = logging.getLogger(__name__)

REPAIRED, REPORTED, PRUNED = "repaired", "needs a decision", "pruned"


@dataclass(frozen=True)
class Finding:
    kind: str  # missing_machine, wrong_image, stale_lease, secret_behind, duplicate_machine, orphan_app
    subject: str
    outcome: str
    detail: str = ""


def _provisioning_in_progress(instance: Instance) -> bool:
    """A live provisioning run holds the team: leave the team to it."""
    if not instance.claimed_by or instance.claimed_until is None:
        return False
    return instance.claimed_until > dj_timezone.now() and not holder_is_gone(instance.claimed_by)


def reconcile(*, actor: str, prune: bool = False, dry_run: bool = False, concurrency: int = 8) -> list[Finding]:
    """Repairs are recorded on each team's timeline as done by `actor`."""
    backend = get_backend(settings.MACHINE_BACKEND)
    if not isinstance(backend, FlyBackend):
        raise BackendError("reconcile compares the database with Fly; the local backend is kept by supervision")
    client = backend.client
    findings: list[Finding] = []
    findings += _release_stale_leases(backend, dry_run)

    machines_by_team: dict[int, list] = {}
    for machine in client.list_org_machines(settings.FLY_ORG):
        team_id = machine.metadata.get("cloudctl_team")
        if machine.state not in GONE_STATES and team_id and team_id.isdigit():
            machines_by_team.setdefault(int(team_id), []).append(machine)

    to_provision: list[Team] = []
    instances = Instance.objects.filter(backend=settings.MACHINE_BACKEND).select_related("team").exclude(
        Q(desired_state__in=[Instance.State.DESTROYED, Instance.State.DESTROYING]) | Q(state=Instance.State.PENDING))
    for instance in instances:
        if _provisioning_in_progress(instance) or "machine" not in instance.completed_steps:
            continue
        team, live = instance.team, machines_by_team.get(instance.team_id, [])
        # The org-wide listing is a point in time (docs/fly.md): a Machine made or changed moments ago may be
        # missing from it. Only a direct read proves one gone; one that exists waits for the next run.
        if not live and backend.observe(instance) is not ObservedState.MISSING:
            continue
        if not live:
            findings.append(Finding("missing_machine", team.slug, REPAIRED, "machine gone: provisioning again"))
            to_provision.append(team)
            continue
        recorded = next((m for m in live if m.id == instance.resources.get("machine")), live[0])
        for extra in (m for m in live if m.id != recorded.id and _still_there(client, m)):
            findings.append(Finding("duplicate_machine", f"{team.slug}/{extra.id}", REPAIRED, "destroyed"))
            if not dry_run:
                client.destroy_machine(extra.app_name, extra.id, force=True)
        if recorded.id != instance.resources.get("machine"):
            instance.resources["machine"] = recorded.id
        findings += _repair_instance(backend, instance, recorded, dry_run, actor=actor)

    findings += _orphan_apps(client, prune, dry_run)
    if to_provision and not dry_run:
        for team in to_provision:
            Instance.objects.filter(team=team).update(
                resources={k: v for k, v in team.instance.resources.items() if k not in ("machine", "launch_id")})
        result = provision_fleet(to_provision, actor=actor, concurrency=concurrency)
        findings += [Finding("missing_machine", f"team {team_id}", REPORTED, f"re-provisioning failed: {why}")
                     for team_id, why in result.failed.items()]
    for finding in findings:
        logger.info("reconcile %s %s: %s %s", finding.kind, finding.subject, finding.outcome, finding.detail)
    return findings


def _still_there(client, machine) -> bool:
    """Whether a Machine the (lagging) listing shows is still live, by reading it."""
    try:
        return client.get_machine(machine.app_name, machine.id).state not in GONE_STATES
    except FlyAPIError as error:
        if error.http_status == 404:
            return False
        raise


def _repair_instance(backend: FlyBackend, instance: Instance, machine, dry_run: bool, *, actor: str) -> list[Finding]:
    findings = []
    team = instance.team
    if machine.image != instance.image:
        findings.append(Finding("wrong_image", team.slug, REPAIRED, f"{machine.image} -> {instance.image}"))
        if not dry_run:
            instance.resources.update(backend.update(instance, instance.image))
            timeline.record(team, timeline.Kind.RECONCILED, f"machine moved back to {instance.image}", actor=actor,
                            data={"finding": "wrong_image", "from": machine.image, "to": instance.image})
    if instance.resources.get("token_generation") != team.token_generation:
        findings.append(Finding("secret_behind", team.slug, REPAIRED,
                                f"generation {instance.resources.get('token_generation')} -> {team.token_generation}"))
        if not dry_run:
            instance.resources.update(backend.push_secret(instance))
            timeline.record(team, timeline.Kind.RECONCILED, "app secret updated to the current token", actor=actor,
                            data={"finding": "secret_behind", "generation": team.token_generation})
    if findings and not dry_run:
        instance.save(update_fields=["resources", "updated_at"])
    return findings


def _release_stale_leases(backend: FlyBackend, dry_run: bool) -> list[Finding]:
    """Leases we took whose holder died (or that expired) are released with their recorded nonce."""
    findings = []
    now = datetime.now(timezone.utc)
    for lease in MachineLease.objects.all():
        if lease.expires_at > now and not holder_is_gone(lease.holder):
            continue
        findings.append(Finding("stale_lease", f"{lease.app}/{lease.machine_id}", REPAIRED,
                                f"left by {lease.holder}"))
        if not dry_run:
            backend.release_if_abandoned(lease)
    return findings


def _orphan_apps(client, prune: bool, dry_run: bool) -> list[Finding]:
    """Apps named like ours whose team does not exist, or whose instance was destroyed."""
    live_teams = set(Instance.objects.exclude(state=Instance.State.DESTROYED).values_list("team_id", flat=True))
    live_teams |= set(Team.objects.filter(instance__isnull=True).values_list("pk", flat=True))
    findings = []
    for app in client.list_apps(settings.FLY_ORG):
        team_id = team_of_app(app.name)
        if team_id is None or team_id in live_teams:
            continue
        if prune and not dry_run:
            client.delete_app(app.name, force=True)
            findings.append(Finding("orphan_app", app.name, PRUNED, "deleted"))
        else:
            findings.append(Finding("orphan_app", app.name, REPORTED, "no team: run with --prune to delete"))
    return findings
