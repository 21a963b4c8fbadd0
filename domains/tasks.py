"""The certificate's periodic check (Django's Tasks API, run by `manage.py db_worker`)."""

from django_tasks import task

from instances.tasks import enqueue_again

from .services import check_certificates


@task()
def check_certificate_status(every_seconds: int = 0) -> int:
    """Ask Fly about each recorded certificate again (the dashboard shows what it answered); with
    `every_seconds`, run again after that long."""
    try:
        return len(check_certificates(actor="task check_certificate_status"))
    finally:
        if every_seconds:
            enqueue_again(check_certificate_status, every_seconds)
