"""Which permission each operator action needs (the codenames are the team's: `teams.permissions`). The views,
the buttons, the admin and `services.request_action` read this one table."""

from collections.abc import Iterable

from teams.permissions import DESTROY_INSTANCE, OPERATE_INSTANCE

from .models import TeamAction

# The permission each operator action needs; every TeamAction.Kind has one (a test checks it).
ACTION_PERMISSIONS = {
    TeamAction.Kind.PROVISION: OPERATE_INSTANCE,
    TeamAction.Kind.START: OPERATE_INSTANCE,
    TeamAction.Kind.STOP: OPERATE_INSTANCE,
    TeamAction.Kind.RESTART: OPERATE_INSTANCE,
    TeamAction.Kind.DESTROY: DESTROY_INSTANCE,
}


def permitted_actions(user, kinds: Iterable[str]) -> list[str]:
    """The action kinds `user` may request (the buttons a team page shows)."""
    return [kind for kind in kinds if user.has_perm(ACTION_PERMISSIONS[kind])]
