# What else named the deployment models by the teams app: their content types (and so their permissions) and
# the deploy tasks already queued under their old path.

from django.db import migrations

MODELS = ("deployment", "deploymenttarget")
TASK_PATHS = ("teams.tasks.run_deployment_task", "deploys.tasks.run_deployment_task")


def relabel(apps, old_app: str, new_app: str, old_task: str, new_task: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        # A fresh database has neither yet (post_migrate creates them after every migration has run).
        if not ContentType.objects.filter(app_label=new_app, model=model).exists():
            ContentType.objects.filter(app_label=old_app, model=model).update(app_label=new_app)
    apps.get_model("django_tasks_database", "DBTaskResult").objects.filter(task_path=old_task).update(task_path=new_task)


def forwards(apps, schema_editor):
    relabel(apps, "teams", "deploys", *TASK_PATHS)


def backwards(apps, schema_editor):
    relabel(apps, "deploys", "teams", *reversed(TASK_PATHS))


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('django_tasks_database', '0021_conditional_partial_index_ordering'),
        ('deploys', '0001_initial'),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
