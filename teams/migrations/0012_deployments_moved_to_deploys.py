# The deployment models now belong to the deploys app (deploys/0001), tables unchanged: state only.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('teams', '0011_teamevent_kind_actor_data'),
        ('deploys', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.DeleteModel(name='DeploymentTarget'),
            migrations.DeleteModel(name='Deployment'),
        ]),
    ]
