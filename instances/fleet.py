"""Provisioning many teams at once: a bounded pool of workers, each team retried until it runs."""

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.db import close_old_connections, connection

from teams.models import Team

from .models import Instance
from .provisioning import ProvisioningBusy, provision

logger = logging.getLogger(__name__)


@dataclass
class FleetResult:
    running: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def teams_needing_provisioning() -> list[Team]:
    """Teams without a running instance (new, failed, or interrupted mid-provisioning)."""
    running = Instance.objects.filter(state=Instance.State.RUNNING).values("team_id")
    return list(Team.objects.filter(status=Team.Status.ACTIVE).exclude(pk__in=running).order_by("pk"))


def provision_fleet(teams: Iterable[Team], *, actor: str, concurrency: int = 8, attempts: int = 5,
                    progress: Callable[[Team, str], None] | None = None) -> FleetResult:
    """Provision every team as `actor`, `concurrency` at a time; a team that fails is retried up to `attempts`
    times (every run resumes where the last stopped). Returns which ended running and which failed, with why."""
    result = FleetResult()

    def one(team: Team) -> None:
        close_old_connections()
        try:
            for attempt in range(1, attempts + 1):
                try:
                    provision(team, actor=actor)
                except ProvisioningBusy as busy:
                    result.failed[team.pk] = str(busy)
                    break
                except Exception as error:  # recorded on the instance; try again from where it stopped
                    result.failed[team.pk] = str(error)
                    logger.info("team %s attempt %s failed: %s", team.pk, attempt, error)
                    continue
                result.failed.pop(team.pk, None)
                result.running.append(team.pk)
                break
            if progress:
                progress(team, "running" if team.pk in result.running else "failed")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, teams))
    return result
