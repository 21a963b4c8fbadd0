"""Background tasks of the sso app (Django's Tasks API, run by `manage.py db_worker`)."""

from django_tasks import task

from instances.tasks import enqueue_again


@task()
def prune_single_sign_on(every_seconds: int = 0) -> int:
    """Delete expired codes, and grants and audit rows past CLOUDCTL_AUDIT_RETENTION_DAYS; with `every_seconds`,
    run again after that long."""
    from .services import prune_single_sign_on as prune

    try:
        return prune()
    finally:
        if every_seconds:
            enqueue_again(prune_single_sign_on, every_seconds)
