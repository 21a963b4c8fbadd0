"""The permission to run a restore drill now, and the groups that hold backups' permissions: restoring a team's
database (`restore_database`) to Fleet administrator, running a drill now (`run_drill`) to Fleet operator and
Fleet administrator (teams.permissions.GROUPS)."""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

from teams.permissions import ensure_groups

# The groups as this migration makes them (a copy: teams.permissions.GROUPS may change later).
_VIEWER = ["teams.view_team", "credentials.view_credentialevent"]
_OPERATOR = [*_VIEWER, "teams.add_team", "teams.change_team", "teams.operate_instance", "teams.rotate_token",
             "backups.run_drill"]
GROUPS = {
    "Fleet viewer": _VIEWER,
    "Fleet operator": _OPERATOR,
    "Fleet deployer": [*_VIEWER, "teams.deploy_image"],
    "Fleet administrator": [*_OPERATOR, "teams.destroy_instance", "teams.deploy_image", "backups.restore_database"],
}
ADDED = ("run_drill", "restore_database")


def grant(apps, schema_editor):
    # Permissions are otherwise created once every migration has run (post_migrate): the groups need them now.
    for label in ("teams", "credentials", "backups"):
        create_permissions(global_apps.get_app_config(label), apps=apps, verbosity=0,
                           using=schema_editor.connection.alias)
    ensure_groups(apps, GROUPS)


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    for group in apps.get_model("auth", "Group").objects.filter(name__in=GROUPS):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="backups", codename__in=ADDED))


class Migration(migrations.Migration):

    dependencies = [
        ("backups", "0003_restore_swap"),
        ("teams", "0007_team_permissions_groups"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="restoredrill",
            options={"ordering": ["-started_at"],
                     "permissions": [("run_drill", "Can run a team's restore drill now")]},
        ),
        migrations.RunPython(grant, revoke),
    ]
