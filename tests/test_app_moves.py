"""A database made by the migrations of before the split into apps (every model in `teams`) migrates forward
with every row intact: the moved models keep their tables, their content types (and so permissions, with the
groups holding them) follow them, tasks queued under an old path still run, and each instance's backend path
names where the backend lives now."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

# The latest migration of each project app before the moves; apps that did not exist yet are unapplied.
BEFORE_THE_MOVES = [("teams", "0011_teamevent_kind_actor_data"), ("credentials", "0004_stale_boot_reason"),
                    ("deploys", None), ("instances", None)]
# Queued under the old paths, and where each task lives now; the last was never moved.
QUEUED_TASKS = {
    "teams.tasks.run_deployment_task": "deploys.tasks.run_deployment_task",
    "teams.tasks.provision_team": "instances.tasks.provision_team",
    "teams.tasks.reconcile_fleet": "instances.tasks.reconcile_fleet",
    "teams.tasks.run_team_action": "instances.tasks.run_team_action",
    "teams.tasks.check_backups": "backups.tasks.check_backups",
    "credentials.tasks.prune_audit_trail": "credentials.tasks.prune_audit_trail",
}
# The backends' paths each instance keeps, and what they become; one outside the project is left alone.
BACKEND_PATHS = {
    "teams.backends.local.LocalBackend": "instances.backends.local.LocalBackend",
    "teams.backends.fly.FlyBackend": "instances.backends.fly.FlyBackend",
    "elsewhere.backends.CustomBackend": "elsewhere.backends.CustomBackend",
}
# The moved models whose permissions a group held before the moves, and the app that owns them after.
MOVED_MODELS = {"deployment": "deploys", "instance": "instances", "teamaction": "instances",
                "machinelease": "instances"}
PROJECT_TABLES = ("teams_", "credentials_")


def migrate(targets):
    """Migrate to `targets`; returns the models as those migrations left them."""
    MigrationExecutor(connection).migrate(targets)
    loader = MigrationExecutor(connection).loader
    return loader.project_state(list(loader.applied_migrations)).apps


def latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def columns_of_project_tables() -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        return {table: [column.name for column in connection.introspection.get_table_description(cursor, table)]
                for table in sorted(name for name in connection.introspection.table_names(cursor)
                                    if name.startswith(PROJECT_TABLES))}


def rows_of_project_tables(columns: dict[str, list[str]]) -> dict[str, list[tuple]]:
    """Each table's rows, in `columns` where it names the table (columns added since hold their defaults), else
    in all its columns."""
    rows = {}
    with connection.cursor() as cursor:
        for table, all_columns in columns_of_project_tables().items():
            selected = ", ".join(connection.ops.quote_name(name) for name in columns.get(table, all_columns))
            cursor.execute(f'SELECT {selected} FROM "{table}" ORDER BY 1')
            rows[table] = cursor.fetchall()
    return rows


def fill_every_table(apps) -> None:
    now = timezone.now()
    model = apps.get_model
    team = model("teams", "Team").objects.create(slug="acme", name="Acme", region="ams", token_generation=3)
    for number, backend in enumerate(BACKEND_PATHS):
        model("teams", "Instance").objects.create(
            team=team if number == 0 else model("teams", "Team").objects.create(slug=f"team-{number}"),
            backend=backend, state="running", image="v1", url="http://x", resources={"port": 1},
            completed_steps=["app"], last_backup_at=now, boot_id="b1")
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
    # As the old code left them: the moved models' content types (and permissions, held by a group) under teams.
    content_types = model("contenttypes", "ContentType").objects
    content_types.filter(app_label__in=set(MOVED_MODELS.values())).delete()
    group = model("auth", "Group").objects.create(name="Watchers of moved models")
    for model_name in MOVED_MODELS:
        content_type, _ = content_types.get_or_create(app_label="teams", model=model_name)
        permission, _ = model("auth", "Permission").objects.get_or_create(
            content_type=content_type, codename=f"view_{model_name}", defaults={"name": f"Can view {model_name}"})
        group.permissions.add(permission)
    for task_path in QUEUED_TASKS:
        model("django_tasks_database", "DBTaskResult").objects.create(
            task_path=task_path, args_kwargs={"args": [deployment.pk], "kwargs": {}}, queue_name="default",
            backend_name="default", run_after=now, exception_class_path="", traceback="")


def with_backend_paths_moved(rows: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """The rows as they should be after the moves: only the instances' backend paths change."""
    return {table: [tuple(BACKEND_PATHS.get(value, value) if table == "teams_instance" else value
                          for value in row) for row in table_rows]
            for table, table_rows in rows.items()}


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_moves_migrates_forward_intact():
    fill_every_table(migrate(BEFORE_THE_MOVES))
    columns_before = columns_of_project_tables()
    before = rows_of_project_tables(columns_before)
    assert all(before.values()), [table for table, rows in before.items() if not rows]

    apps = migrate(latest())

    after = rows_of_project_tables(columns_before)
    # Tables that later migrations created start empty; every table that was there keeps its rows.
    assert {table: rows for table, rows in after.items() if table not in before and rows} == {}
    assert {table: rows for table, rows in after.items() if table in before} == with_backend_paths_moved(before)
    held = apps.get_model("auth", "Group").objects.get(name="Watchers of moved models").permissions.all()
    assert {(permission.content_type.app_label, permission.content_type.model, permission.codename)
            for permission in held} == {(app, model, f"view_{model}") for model, app in MOVED_MODELS.items()}
    queued = apps.get_model("django_tasks_database", "DBTaskResult").objects.values_list("task_path", flat=True)
    assert sorted(queued) == sorted(QUEUED_TASKS.values())

    from django.utils.module_loading import import_string

    from deploys.models import Deployment, DeploymentTarget
    from instances.backends import MachineBackend
    from instances.models import Instance, MachineLease, TeamAction

    target = DeploymentTarget.objects.select_related("deployment", "team").get()
    assert (target.deployment.image, target.team.slug, target.step) == ("v2", "acme", "updated")
    assert Deployment.objects.get().requested_by == "carol"
    assert all(import_string(task_path).module_path == task_path for task_path in queued)
    acme = Instance.objects.select_related("team").get(team__slug="acme")
    assert (acme.backend, acme.boot_id, acme.team.token_generation) == ("instances.backends.local.LocalBackend", "b1", 3)
    assert all(issubclass(import_string(instance.backend), MachineBackend)
               for instance in Instance.objects.filter(backend__startswith="instances."))
    action = TeamAction.objects.select_related("team").get()
    assert (action.team, action.kind, action.requested_by) == (acme.team, "restart", "bob")
    assert MachineLease.objects.get().holder == "h"
