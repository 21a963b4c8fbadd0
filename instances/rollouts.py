"""What provisioning and the reconciler need from deployments, without importing the deploys app (it sits above
them and imports them). The deploys app plugs its answers in when it loads (`DeploysConfig.ready`); until then
new instances start on the configured image and no team counts as being deployed."""

from collections.abc import Callable

from django.conf import settings
from django.db.models import QuerySet


def configured_image() -> str:
    return settings.INSTANCE_IMAGE


def no_team_ids() -> QuerySet:
    from teams.models import Team

    return Team.objects.none().values("pk")


# The image a new instance starts on.
image_for_new_instances: Callable[[], str] = configured_image
# The ids of the teams a live deployment is stopping and starting right now (a `values` query of one column).
team_ids_being_deployed: Callable[[], QuerySet] = no_team_ids


def plug_in(*, image: Callable[[], str], being_deployed: Callable[[], QuerySet]) -> None:
    global image_for_new_instances, team_ids_being_deployed
    image_for_new_instances, team_ids_being_deployed = image, being_deployed
