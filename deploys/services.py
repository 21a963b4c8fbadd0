"""Starting a deployment (recorded, then run by `manage.py deploy` or queued on the worker) and resuming one."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from instances.holders import claim_is_live
from teams.models import Team
from teams.permissions import DEPLOY_IMAGE, Actor, authorize

from .models import Deployment, DeploymentTarget
from .plan import DeploymentRefused, plan_deployment
from .selectors import open_deployment
from .tasks import run_deployment_task


logger = logging.getLogger(__name__)

Step = DeploymentTarget.Step


def start_deployment(image: str, *, actor: str, slugs: list[str] | None = None, canary: int = 1,
                     concurrency: int = 10, max_failures: int = 0, wave_size: int = 0) -> Deployment:
    """Record a deployment of `image` to the given teams (all active teams when `slugs` is None), requested by
    `actor`; refused while another deployment is open. Run it with `run_deployment` (the command does, the
    dashboard queues a task)."""
    if concurrency < 1:
        raise DeploymentRefused("concurrency must be at least 1")
    teams = Team.objects.filter(status=Team.Status.ACTIVE).order_by("pk")
    if slugs is not None:
        teams = Team.objects.filter(slug__in=slugs).order_by("pk")
        missing = sorted(set(slugs) - set(teams.values_list("slug", flat=True)))
        if missing:
            raise DeploymentRefused(f"no team with slug {', '.join(missing)}")
    plan = plan_deployment(image, list(teams), canary=canary, wave_size=wave_size)
    try:
        with transaction.atomic():
            busy = open_deployment()
            if busy is not None:
                raise DeploymentRefused(f"{busy} is still open: resume it (`deploy --resume`) first")
            deployment = Deployment.objects.create(
                image=plan.image, all_teams=slugs is None, canary=canary, concurrency=concurrency,
                max_failures=max_failures, requested_by=actor)
            DeploymentTarget.objects.bulk_create(
                [DeploymentTarget(deployment=deployment, team=team, wave=number, was_running=team.pk in plan.running)
                 for number, wave in enumerate(plan.waves) for team in wave]
                + [DeploymentTarget(deployment=deployment, team=team, wave=0, step=Step.SKIPPED, error=reason)
                   for team, reason in plan.skipped])
    except IntegrityError:  # another deployment was opened at the same moment
        raise DeploymentRefused("another deployment is open: resume it (`deploy --resume`) first") from None
    logger.info("deploy deployment=%s image=%s teams=%s waves=%s skipped=%s", deployment.pk, plan.image,
                plan.team_count, len(plan.waves), len(plan.skipped))
    return deployment


def queue_deployment(image: str, *, actor: Actor, **options) -> Deployment:
    """Start a deployment (see `start_deployment`) and run it on the task worker once it is committed; a user
    needs the deploy permission."""
    requested_by = authorize(actor, DEPLOY_IMAGE)
    with transaction.atomic():
        deployment = start_deployment(image, actor=requested_by, **options)
        transaction.on_commit(lambda: run_deployment_task.enqueue(deployment.pk))
    return deployment


def queue_resume(deployment: Deployment, *, actor: Actor) -> None:
    """Resume an open deployment on the task worker; refused while a live run holds it. A user needs the deploy
    permission. The image was checked when the deployment started: a resume only finishes it."""
    authorize(actor, DEPLOY_IMAGE)
    if not deployment.is_open:
        raise DeploymentRefused(f"{deployment} is finished")
    if claim_is_live(deployment.claimed_by, deployment.claimed_until):
        raise DeploymentRefused(f"{deployment} is being run by {deployment.claimed_by}")
    run_deployment_task.enqueue(deployment.pk)
