"""`manage.py db_worker`: django-tasks-db's worker (this app comes first in INSTALLED_APPS, so this command is the
one run), named as a claim's holder and first queuing again the tasks that workers which died left running
(`instances.task_claims`). Its options are django-tasks-db's."""

from django_tasks_db.management.commands import db_worker

from instances.holders import new_holder
from instances.task_claims import requeue_abandoned_tasks


class Command(db_worker.Command):
    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(worker_id=new_holder())

    def handle(self, *args, **options) -> None:
        requeue_abandoned_tasks()
        super().handle(*args, **options)
