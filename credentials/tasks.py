"""Background tasks of the credentials app (Django's Tasks API, run by `manage.py db_worker`)."""

from django_tasks import task

from instances.tasks import enqueue_again


@task()
def prune_audit_trail(every_seconds: int = 0) -> int:
    """Delete audit rows past CLOUDCTL_AUDIT_RETENTION_DAYS; with `every_seconds`, run again after that long."""
    from .retention import prune_credential_events

    try:
        return prune_credential_events()
    finally:
        if every_seconds:
            enqueue_again(prune_audit_trail, every_seconds)
