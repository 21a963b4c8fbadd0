"""Who may do what to the fleet. The dashboard (views and buttons), the admin's actions and the services all
read these names and tables (each operator action names its own in `instances.actions`), so a permission is
granted or refused in one place.

Staff status only opens the operator pages; what a staff user may see or do there is these permissions,
granted through `GROUPS` (created by migration 0007). A superuser has them all. Which permission each operator
"""

from django.apps import apps as installed_apps
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied

VIEW_FLEET = "teams.view_team"  # every dashboard page and JSON endpoint, deployments included
ADD_TEAM = "teams.add_team"
CHANGE_TEAM = "teams.change_team"  # the admin: edit a team, disable and enable
OPERATE_INSTANCE = "teams.operate_instance"
ROTATE_TOKEN = "teams.rotate_token"
DESTROY_INSTANCE = "teams.destroy_instance"
DEPLOY_IMAGE = "teams.deploy_image"  # start, resume and redeploy: the image then runs with each team's token
VIEW_AUDIT = "credentials.view_credentialevent"
# Restore a team's database to a point in time (request, confirm the swap, swap back, cancel) and see its preview,
# which shows the team's rows: backups.restore checks it (its RESTORE_PERMISSION is this).
RESTORE_DATABASE = "backups.restore_database"
# Queue a restore drill now: it reads the team's replica in the worker (read-only) and shows nobody its rows.
RUN_DRILL = "backups.run_drill"

_VIEWER = [VIEW_FLEET, VIEW_AUDIT]
_OPERATOR = [*_VIEWER, ADD_TEAM, CHANGE_TEAM, OPERATE_INSTANCE, ROTATE_TOKEN, RUN_DRILL]
# The groups shipped with cloudctl, each with exactly these permissions (README, "The operator dashboard").
# Changing a set takes a new migration that calls `ensure_groups` again with the sets as they then are (a copy:
# a migration must keep doing what it did when GROUPS changes later, on a fresh database too).
GROUPS = {
    "Fleet viewer": _VIEWER,
    "Fleet operator": _OPERATOR,
    "Fleet deployer": [*_VIEWER, DEPLOY_IMAGE],
    "Fleet administrator": [*_OPERATOR, DESTROY_INSTANCE, DEPLOY_IMAGE, RESTORE_DATABASE],
}

# Who acts: a signed-in user, whose permissions are checked, or the name of a process started from a shell
# on the control plane (a command, the worker), which no permission restricts: its operator has the keys.
Actor = AbstractBaseUser | AnonymousUser | str


def authorize(actor: Actor, permission: str) -> str:
    """The name to record for `actor`, once it may use `permission` (PermissionDenied if it may not)."""
    if isinstance(actor, str):
        return actor
    if not actor.has_perm(permission):
        raise PermissionDenied(f"{actor.get_username() or 'anonymous'} lacks the permission {permission}")
    return actor.get_username()


def ensure_groups(apps=installed_apps, groups: dict[str, list[str]] | None = None) -> None:
    """Give each group of `groups` (default `GROUPS`) exactly its permissions, creating it if needed (`apps`: a
    migration's historical apps, or the installed ones; a migration passes its own copy of the sets). The
    permissions must exist already."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, permissions in (GROUPS if groups is None else groups).items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set([
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
            for app_label, codename in (permission.split(".") for permission in permissions)])
