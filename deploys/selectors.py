"""What the deploy pages, the metrics and provisioning read: the fleet's image, which images may be deployed,
the open deployment and its progress."""

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from instances.machines import get_backend

from .models import Deployment, DeploymentTarget


Step = DeploymentTarget.Step


def fleet_image() -> str:
    """The image new teams start on: the last deployment to every team that completed, else the setting."""
    last = (Deployment.objects.filter(all_teams=True, state__in=[Deployment.State.SUCCEEDED,
                                                                 Deployment.State.COMPLETED_WITH_FAILURES])
            .order_by("-finished_at", "-id").values_list("image", flat=True).first())
    return last or settings.INSTANCE_IMAGE


def allowed_image_prefixes() -> list[str] | None:
    """The prefixes a deployed image must start with; None when any image is accepted. Unset, the backend's own
    (`default_image_prefixes`): on Fly the team image's repository in Fly's registry, which only this
    organization's app can push to; on the local backend any image, there only a label on processes running
    this checkout's code; on a backend that names none, no image until the setting names some."""
    if settings.ALLOWED_IMAGE_PREFIXES:
        return settings.ALLOWED_IMAGE_PREFIXES
    try:
        return get_backend(settings.MACHINE_BACKEND).default_image_prefixes()
    except NotImplementedError:
        return []


def open_deployment() -> Deployment | None:
    return Deployment.objects.filter(is_open=True).first()


def deployment_progress(deployment: Deployment) -> dict[str, int]:
    """How many of its teams are at each step (one statement)."""
    counts = dict(deployment.targets.order_by().values_list("step").annotate(n=Count("pk")))
    return {step.value: counts.get(step.value, 0) for step in Step}


def team_ids_being_deployed():
    """The teams a live deployment is stopping and starting right now (a `values` query of `team_id`)."""
    return DeploymentTarget.objects.filter(
        deployment__is_open=True, deployment__claimed_until__gte=timezone.now(),
        step__in=[Step.UPDATING, Step.ROLLING_BACK]).values("team_id")
