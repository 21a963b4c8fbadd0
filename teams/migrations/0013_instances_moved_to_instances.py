# The instance models now belong to the instances app (instances/0001), tables unchanged: state only.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('teams', '0012_deployments_moved_to_deploys'),
        ('instances', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.DeleteModel(name='Instance'),
            migrations.DeleteModel(name='MachineLease'),
            migrations.DeleteModel(name='TeamAction'),
        ]),
    ]
