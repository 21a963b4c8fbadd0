# The deployment tables were created by teams/0006 and keep their names: this migration moves only Django's
# record of which app owns them (state only; teams/0012 removes them from the teams app's state).

import django.db.models.deletion
from django.db import migrations, models

import cloudctl.logs


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('teams', '0011_teamevent_kind_actor_data'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='Deployment',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('image', models.CharField(max_length=300)),
                    ('all_teams', models.BooleanField(default=False)),
                    ('state', models.CharField(choices=[('running', 'Running'), ('interrupted', 'Interrupted (resume it)'), ('rolling_back', 'Rolling back'), ('succeeded', 'Succeeded'), ('completed_with_failures', 'Completed with failures'), ('halted', 'Halted and rolled back')], default='running', max_length=24)),
                    ('is_open', models.BooleanField(default=True, null=True)),
                    ('canary', models.PositiveIntegerField()),
                    ('concurrency', models.PositiveIntegerField()),
                    ('max_failures', models.PositiveIntegerField()),
                    ('requested_by', models.CharField(blank=True, max_length=150)),
                    ('message', cloudctl.logs.RedactedTextField(blank=True)),
                    ('claimed_by', models.CharField(blank=True, max_length=100)),
                    ('claimed_until', models.DateTimeField(blank=True, null=True)),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('finished_at', models.DateTimeField(blank=True, null=True)),
                ],
                options={
                    'db_table': 'teams_deployment',
                    'ordering': ['-created_at', '-id'],
                    'constraints': [models.UniqueConstraint(condition=models.Q(('is_open', True)), fields=('is_open',), name='one_open_deployment')],
                },
            ),
            migrations.CreateModel(
                name='DeploymentTarget',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('wave', models.PositiveIntegerField()),
                    ('step', models.CharField(choices=[('pending', 'Pending'), ('updating', 'Updating'), ('updated', 'Updated'), ('failed', 'Failed'), ('skipped', 'Skipped'), ('rolling_back', 'Rolling back'), ('rolled_back', 'Rolled back'), ('rollback_failed', 'Rollback failed'), ('tenant_fault', 'Tenant fault')], default='pending', max_length=16)),
                    ('previous_image', models.CharField(blank=True, max_length=300)),
                    ('was_running', models.BooleanField(null=True)),
                    ('attempts', models.PositiveIntegerField(default=0)),
                    ('error', cloudctl.logs.RedactedTextField(blank=True)),
                    ('started_at', models.DateTimeField(blank=True, null=True)),
                    ('finished_at', models.DateTimeField(blank=True, null=True)),
                    ('deployment', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='targets', to='deploys.deployment')),
                    ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deployment_targets', to='teams.team')),
                ],
                options={
                    'db_table': 'teams_deploymenttarget',
                    'ordering': ['wave', 'id'],
                    'indexes': [models.Index(fields=['deployment', 'step'], name='teams_deplo_deploym_d5b630_idx')],
                    'constraints': [models.UniqueConstraint(fields=('deployment', 'team'), name='one_target_per_team')],
                },
            ),
        ]),
    ]
