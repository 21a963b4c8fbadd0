# The instance tables were created by the teams app and keep their names: this migration moves only Django's
# record of which app owns them (state only; teams/0013 removes them from the teams app's state).

import django.db.models.deletion
from django.db import migrations, models

import cloudctl.logs


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('teams', '0012_deployments_moved_to_deploys'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='Instance',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('backend', models.CharField(max_length=200)),
                    ('state', models.CharField(choices=[('pending', 'Pending'), ('provisioning', 'Provisioning'), ('running', 'Running'), ('stopped', 'Stopped'), ('failed', 'Failed'), ('destroying', 'Destroying'), ('destroyed', 'Destroyed')], db_index=True, default='pending', max_length=16)),
                    ('desired_state', models.CharField(choices=[('pending', 'Pending'), ('provisioning', 'Provisioning'), ('running', 'Running'), ('stopped', 'Stopped'), ('failed', 'Failed'), ('destroying', 'Destroying'), ('destroyed', 'Destroyed')], default='running', max_length=16)),
                    ('image', models.CharField(blank=True, db_index=True, max_length=300)),
                    ('url', models.CharField(blank=True, max_length=300)),
                    ('resources', models.JSONField(blank=True, default=dict)),
                    ('completed_steps', models.JSONField(blank=True, default=list)),
                    ('last_error', cloudctl.logs.RedactedTextField(blank=True)),
                    ('claimed_by', models.CharField(blank=True, max_length=100)),
                    ('claimed_until', models.DateTimeField(blank=True, null=True)),
                    ('updated_at', models.DateTimeField(auto_now=True)),
                    ('last_backup_at', models.DateTimeField(blank=True, db_index=True, null=True)),
                    ('backups_expected_since', models.DateTimeField(blank=True, null=True)),
                    ('backup_alerted_at', models.DateTimeField(blank=True, null=True)),
                    ('scaled_to_zero_at', models.DateTimeField(blank=True, null=True)),
                    ('scaled_to_zero_reason', models.CharField(blank=True, max_length=200)),
                    ('boot_id', models.CharField(blank=True, max_length=64)),
                    ('team', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='instance', to='teams.team')),
                ],
                options={
                    'db_table': 'teams_instance',
                },
            ),
            migrations.CreateModel(
                name='MachineLease',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('app', models.CharField(max_length=100)),
                    ('machine_id', models.CharField(max_length=64)),
                    ('nonce', models.CharField(max_length=128)),
                    ('holder', models.CharField(max_length=100)),
                    ('expires_at', models.DateTimeField()),
                ],
                options={
                    'db_table': 'teams_machinelease',
                    'constraints': [models.UniqueConstraint(fields=('app', 'machine_id'), name='one_lease_per_machine')],
                },
            ),
            migrations.CreateModel(
                name='TeamAction',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('kind', models.CharField(choices=[('provision', 'Provision'), ('start', 'Start'), ('stop', 'Stop'), ('restart', 'Restart'), ('destroy', 'Destroy')], max_length=16)),
                    ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='queued', max_length=16)),
                    ('requested_by', models.CharField(blank=True, max_length=150)),
                    ('error', cloudctl.logs.RedactedTextField(blank=True)),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('started_at', models.DateTimeField(blank=True, null=True)),
                    ('finished_at', models.DateTimeField(blank=True, null=True)),
                    ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='actions', to='teams.team')),
                ],
                options={
                    'db_table': 'teams_teamaction',
                    'ordering': ['-created_at', '-id'],
                },
            ),
        ]),
    ]
