# The machine backends moved from `teams.backends` to `instances.backends`: the dotted path each instance keeps
# (fixed at its creation, so that changing the setting never orphans its resources) follows them. Nothing
# accepts the old paths at run time.

from django.db import migrations
from django.db.models import Value
from django.db.models.functions import Concat, Substr

OLD, NEW = "teams.backends.", "instances.backends."


def move_paths(apps, old: str, new: str) -> None:
    apps.get_model("instances", "Instance").objects.filter(backend__startswith=old).update(
        backend=Concat(Value(new), Substr("backend", len(old) + 1)))


def forwards(apps, schema_editor):
    move_paths(apps, OLD, NEW)


def backwards(apps, schema_editor):
    move_paths(apps, NEW, OLD)


class Migration(migrations.Migration):

    dependencies = [
        ('instances', '0002_adopt_content_types_and_queued_tasks'),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
