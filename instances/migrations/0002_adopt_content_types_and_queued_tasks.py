# What else named the instance models by the teams app: their content types (and so their permissions, with the
# groups that hold them) and the tasks already queued under `teams.tasks`, which moved to the instances app and,
# for the backup watch, to the backups app (an app without migrations of its own).

from django.db import migrations

MODELS = ("instance", "teamaction", "machinelease")
TASK_PATHS = {
    "teams.tasks.provision_team": "instances.tasks.provision_team",
    "teams.tasks.reconcile_fleet": "instances.tasks.reconcile_fleet",
    "teams.tasks.run_team_action": "instances.tasks.run_team_action",
    "teams.tasks.check_backups": "backups.tasks.check_backups",
}


def relabel(apps, old_app: str, new_app: str, task_paths: dict[str, str]) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        # A fresh database has neither yet (post_migrate creates them after every migration has run).
        if not ContentType.objects.filter(app_label=new_app, model=model).exists():
            ContentType.objects.filter(app_label=old_app, model=model).update(app_label=new_app)
    queued = apps.get_model("django_tasks_database", "DBTaskResult").objects
    for old_path, new_path in task_paths.items():
        queued.filter(task_path=old_path).update(task_path=new_path)


def forwards(apps, schema_editor):
    relabel(apps, "teams", "instances", TASK_PATHS)


def backwards(apps, schema_editor):
    relabel(apps, "instances", "teams", {new: old for old, new in TASK_PATHS.items()})


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('django_tasks_database', '0021_conditional_partial_index_ordering'),
        ('instances', '0001_initial'),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
