"""Explicit permissions on teams, and the groups that grant them (teams.permissions.GROUPS)."""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

from teams.permissions import ensure_groups

# The groups as this migration made them: later sets (backups' permissions, whose tables come later on a fresh
# database) are given by the migrations that changed them (backups/migrations/0004).
_VIEWER = ["teams.view_team", "credentials.view_credentialevent"]
_OPERATOR = [*_VIEWER, "teams.add_team", "teams.change_team", "teams.operate_instance", "teams.rotate_token"]
GROUPS = {
    "Fleet viewer": _VIEWER,
    "Fleet operator": _OPERATOR,
    "Fleet deployer": [*_VIEWER, "teams.deploy_image"],
    "Fleet administrator": [*_OPERATOR, "teams.destroy_instance", "teams.deploy_image"],
}


def create_groups(apps, schema_editor):
    # Permissions are otherwise created once every migration has run (post_migrate): the groups need them now,
    # on a fresh database as on one that already has the default ones.
    for label in ("teams", "credentials"):
        create_permissions(global_apps.get_app_config(label), apps=apps, verbosity=0,
                           using=schema_editor.connection.alias)
    ensure_groups(apps, GROUPS)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("teams", "0006_deployments"),
        ("credentials", "0002_refused_signals"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="team",
            options={"ordering": ["slug"], "permissions": [
                ("operate_instance", "Can provision, start, stop and restart a team's instance"),
                ("rotate_token", "Can rotate a team's token"),
                ("destroy_instance", "Can destroy a team's instance (its backups are kept)"),
                ("deploy_image", "Can deploy an image to teams (start, resume, redeploy)"),
            ]},
        ),
        migrations.RunPython(create_groups, remove_groups),
    ]
