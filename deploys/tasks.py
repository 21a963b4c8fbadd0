"""The deploy task (Django's Tasks API, run by `manage.py db_worker`)."""

import logging

from django_tasks import task

from .models import Deployment
from .plan import DeploymentRefused
from .runner import run_deployment

logger = logging.getLogger(__name__)


@task()
def run_deployment_task(deployment_id: int) -> str:
    """Run or resume a deployment (one started from the dashboard, or picked up after its run died)."""
    deployment = Deployment.objects.get(pk=deployment_id)
    try:
        # The worker acts for whoever started the deployment (the dashboard's user), as it does for an action.
        return run_deployment(deployment, actor=deployment.requested_by or "task run_deployment_task").state
    except DeploymentRefused as refused:
        logger.info("%s", refused)
        return "refused"
