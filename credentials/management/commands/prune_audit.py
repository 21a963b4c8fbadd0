from django.conf import settings
from django.core.management.base import BaseCommand

from credentials.retention import prune_credential_events


class Command(BaseCommand):
    help = ("Delete the private API's audit rows older than CLOUDCTL_AUDIT_RETENTION_DAYS (the metrics keep "
            "counting them), once (`manage.py schedule_periodic` queues it to repeat on the worker, every "
            "CLOUDCTL_AUDIT_PRUNE_EVERY).")

    def handle(self, **options):
        pruned = prune_credential_events()
        self.stdout.write(f"{pruned} audit row(s) older than {settings.AUDIT_RETENTION_DAYS} days deleted")
