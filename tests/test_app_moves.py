"""A database made by the migrations of before the split into apps (every model in `teams`) migrates forward
with every row intact: the moved models keep their tables, their content types (and so permissions) follow
them, and tasks queued under an old path still run."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

# The latest migration of each project app before the moves; apps that did not exist yet are unapplied.
BEFORE_THE_MOVES = [("teams", "0011_teamevent_kind_actor_data"), ("credentials", "0004_stale_boot_reason"),
                    ("deploys", None)]
PROJECT_TABLES = ("teams_", "credentials_")


def migrate(targets):
    """Migrate to `targets`; returns the models as those migrations left them."""
    MigrationExecutor(connection).migrate(targets)
    loader = MigrationExecutor(connection).loader
    return loader.project_state(list(loader.applied_migrations)).apps


def latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def rows_of_project_tables() -> dict[str, list[tuple]]:
    with connection.cursor() as cursor:
        tables = sorted(name for name in connection.introspection.table_names(cursor)
                        if name.startswith(PROJECT_TABLES))
        rows = {}
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            rows[table] = cursor.fetchall()
    return rows


def fill_every_table(apps) -> None:
    now = timezone.now()
    model = apps.get_model
    team = model("teams", "Team").objects.create(slug="acme", name="Acme", region="ams", token_generation=3)
    model("teams", "Instance").objects.create(
        team=team, backend="teams.backends.local.LocalBackend", state="running", image="v1", url="http://x",
        resources={"port": 1}, completed_steps=["app"], last_backup_at=now, boot_id="b1")
    model("teams", "TeamEvent").objects.create(team=team, kind="running", actor="alice", message="up",
                                               data={"step": "healthy"})
    model("teams", "MachineLease").objects.create(app="a", machine_id="m", nonce="n", holder="h", expires_at=now)
    model("teams", "TeamAction").objects.create(team=team, kind="restart", status="succeeded", requested_by="bob")
    deployment = model("teams", "Deployment").objects.create(
        image="v2", all_teams=True, state="succeeded", is_open=None, canary=1, concurrency=2, max_failures=0,
        requested_by="carol", finished_at=now)
    model("teams", "DeploymentTarget").objects.create(
        deployment=deployment, team=team, wave=0, step="updated", previous_image="v1", was_running=True)
    model("credentials", "CredentialEvent").objects.create(kind="issued", team=team, client_ip="10.0.0.1")
    model("credentials", "CredentialEventTotal").objects.create(kind="issued", requests=4)
    model("credentials", "CredentialEventWatermark").objects.create(last_event_id=1)
    # As the old code left them: the deployment models' content types (and permissions) under teams.
    content_types = model("contenttypes", "ContentType").objects
    content_types.filter(app_label="deploys").delete()
    content_type, _ = content_types.get_or_create(app_label="teams", model="deployment")
    model("auth", "Permission").objects.get_or_create(content_type=content_type, codename="view_deployment",
                                                      defaults={"name": "Can view deployment"})
    model("django_tasks_database", "DBTaskResult").objects.create(
        task_path="teams.tasks.run_deployment_task", args_kwargs={"args": [deployment.pk], "kwargs": {}},
        queue_name="default", backend_name="default", run_after=now, exception_class_path="", traceback="")


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_moves_migrates_forward_intact():
    fill_every_table(migrate(BEFORE_THE_MOVES))
    before = rows_of_project_tables()
    assert all(before.values()), [table for table, rows in before.items() if not rows]

    apps = migrate(latest())

    assert rows_of_project_tables() == before
    permission = apps.get_model("auth", "Permission").objects.get(codename="view_deployment")
    assert (permission.content_type.app_label, permission.content_type.model) == ("deploys", "deployment")
    queued = apps.get_model("django_tasks_database", "DBTaskResult").objects.get()
    assert queued.task_path == "deploys.tasks.run_deployment_task"

    from deploys.models import Deployment, DeploymentTarget
    from deploys.tasks import run_deployment_task

    target = DeploymentTarget.objects.select_related("deployment", "team").get()
    assert (target.deployment.image, target.team.slug, target.step) == ("v2", "acme", "updated")
    assert Deployment.objects.get().requested_by == "carol"
    assert queued.task_path == run_deployment_task.module_path
