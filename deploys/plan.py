"""Choosing a deployment's waves: which teams take the image, canary first, and which are left alone (and why)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from instances.backends import BackendError, ObservedState
from instances.machines import observe_by_backend
from instances.backends.base import UNHEALTHY_STATES
from instances.models import Instance
from teams.models import Team

from .selectors import allowed_image_prefixes


logger = logging.getLogger(__name__)

DEPLOYABLE_STATES = (Instance.State.RUNNING, Instance.State.STOPPED)
UNHEALTHY_BEFORE = "unhealthy before the update"


class DeploymentRefused(Exception):
    """The deployment cannot start or resume; the message says why and what to do."""


class ImageRefused(DeploymentRefused):
    """The image is not one of the allowed ones (CLOUDCTL_ALLOWED_IMAGE_PREFIXES)."""


@dataclass
class Plan:
    """What a deployment would do: the teams of each wave (0 is the canary) and the teams it leaves alone."""

    image: str
    waves: list[list[Team]] = field(default_factory=list)
    skipped: list[tuple[Team, str]] = field(default_factory=list)
    running: set[int] = field(default_factory=set)  # ids of the teams that run now: their update restarts them

    @property
    def team_count(self) -> int:
        return sum(len(wave) for wave in self.waves)


def ensure_image_allowed(image: str) -> None:
    """Refuse an image from outside the allowed prefixes: a deployed image runs with each team's token and
    volume, so whoever may deploy must not be able to choose any code at all."""
    prefixes = allowed_image_prefixes()
    if prefixes is not None and not image.startswith(tuple(prefixes)):
        raise ImageRefused(f"image {image} is not allowed: it must start with {', '.join(prefixes)} "
                           "(CLOUDCTL_ALLOWED_IMAGE_PREFIXES)")


def plan_deployment(image: str, teams: list[Team], *, canary: int, wave_size: int = 0) -> Plan:
    """Choose the waves. The canary is made of running teams: a stopped team is updated without starting, so it
    proves nothing about the image's health. `wave_size` 0 puts every other team in one wave. Which teams run
    is read from the backends (teams scale to zero without telling the database); teams they see crashed are
    skipped, as unhealthy before the update (each team's health is read again just before its update)."""
    image = image.strip()
    if not image:
        raise DeploymentRefused("the image is empty")
    ensure_image_allowed(image)
    plan = Plan(image)
    candidates = []
    instances = {instance.team_id: instance for instance in Instance.objects.filter(team__in=teams)}
    for team in teams:
        instance = instances.get(team.pk)
        if instance is None or instance.state not in DEPLOYABLE_STATES:
            state = instance.get_state_display().lower() if instance else "not provisioned"
            plan.skipped.append((team, f"instance is {state}: it gets the image when provisioned"))
        elif instance.image == image:
            plan.skipped.append((team, f"already on {image}"))
        else:
            candidates.append(team)
    observed = _observed_states([instances[team.pk] for team in candidates])
    crashed = [team for team in candidates if observed[team.pk] is ObservedState.CRASHED]
    plan.skipped += [(team, f"{UNHEALTHY_BEFORE}: {UNHEALTHY_STATES[ObservedState.CRASHED]}") for team in crashed]
    candidates = [team for team in candidates if team not in crashed]
    plan.running = {team.pk for team in candidates if observed[team.pk] is ObservedState.RUNNING}
    canaries = sorted(candidates, key=lambda team: (team.pk not in plan.running, team.pk))[:canary]
    rest = [team for team in candidates if team not in canaries]
    size = wave_size or len(rest) or 1
    plan.waves = [wave for wave in [canaries, *(rest[start:start + size] for start in range(0, len(rest), size))]
                  if wave]
    return plan


def _observed_states(instances: list[Instance]) -> dict[int, ObservedState]:
    """The real state of each team's instance by team id, by one bulk read per backend; the database's word when
    the backend cannot be read (the plan is still right, only less well ordered: the update checks each team's
    health again)."""
    states = {}
    for group, observed in observe_by_backend(instances):
        if isinstance(observed, BackendError):
            logger.warning("deploy: could not read which instances run (%s); using the database's state", observed)
            observed = {instance.team_id: ObservedState.RUNNING if instance.state == Instance.State.RUNNING
                        else ObservedState.STOPPED for instance in group}
        states.update(observed)
    return states
