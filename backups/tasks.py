"""The backup watch's task (Django's Tasks API, run by `manage.py db_worker`)."""

from django_tasks import task

from instances.tasks import enqueue_again

from .services import check_backup_freshness


@task()
def check_backups(every_seconds: int = 0) -> int:
    """Alert on teams whose backups went stale; with `every_seconds`, run again after that long."""
    try:
        return len(check_backup_freshness(actor="task check_backups"))
    finally:
        if every_seconds:
            enqueue_again(check_backups, every_seconds)


@task()
def drill_restores(every_seconds: int = 0) -> int:
    """Restore drills for the teams that are due, within the run's budget; with `every_seconds`, run again."""
    from .drills import drill_due_teams

    try:
        return len(drill_due_teams(actor="task drill_restores"))
    finally:
        if every_seconds:
            enqueue_again(drill_restores, every_seconds)


@task()
def run_restore_task(restore_id: int, actor: str) -> str:
    """Advance a restore until it waits for a person or ends (backups.restore.run_restore), acting for whoever
    asked: the restore's timeline names them."""
    from .models import Restore
    from .restore import run_restore

    return run_restore(Restore.objects.get(pk=restore_id), actor=actor).state


@task()
def tend_restores(every_seconds: int = 0) -> int:
    """Resume the restores a crash interrupted and delete what outlived its keep period; with `every_seconds`,
    run again after that long."""
    from .restore import tend_restores as tend

    try:
        return len(tend(actor="task tend_restores"))
    finally:
        if every_seconds:
            enqueue_again(tend_restores, every_seconds)


@task()
def drill_team_task(team_id: int, actor: str, database: str) -> str:
    """One team's restore drill, asked for now (backups.drill_requests.request_drill), for whoever asked."""
    from teams.models import Team

    from .drills import drill_team

    team = Team.objects.filter(pk=team_id).first()
    if team is None:  # deleted since it was queued
        return "no such team"
    return drill_team(team, actor=actor, database=database).status
