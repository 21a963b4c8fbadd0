"""Background tasks (Django's Tasks API, run by `manage.py db_worker`). Each calls one service function."""

import logging

from django_tasks import task

from .models import Team
from .provisioning import ProvisioningBusy, provision

logger = logging.getLogger(__name__)


@task()
def provision_team(team_id: int) -> str:
    team = Team.objects.get(pk=team_id)
    try:
        return provision(team).state
    except ProvisioningBusy as busy:
        # The run holding the lease finishes the job; this one has nothing to do.
        logger.info("%s", busy)
        return "busy"


@task()
def reconcile_fleet(every_seconds: int = 0) -> int:
    """Reconcile once; with `every_seconds`, enqueue the next run (a periodic task without a scheduler)."""
    from datetime import timedelta

    from django.utils import timezone

    from .reconcile import reconcile

    try:
        return len(reconcile())
    finally:
        if every_seconds:
            reconcile_fleet.using(run_after=timezone.now() + timedelta(seconds=every_seconds)).enqueue(every_seconds)


@task()
def run_deployment_task(deployment_id: int) -> str:
    """Run or resume a deployment (one started from the dashboard, or picked up after its run died)."""
    from .deploys import DeploymentRefused, run_deployment
    from .models import Deployment

    try:
        return run_deployment(Deployment.objects.get(pk=deployment_id)).state
    except DeploymentRefused as refused:
        logger.info("%s", refused)
        return "refused"
