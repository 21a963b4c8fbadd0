from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from credentials.retention import prune_credential_events
from credentials.tasks import prune_audit_trail
from instances.tasks import schedule_periodic


class Command(BaseCommand):
    help = ("Delete the private API's audit rows older than CLOUDCTL_AUDIT_RETENTION_DAYS (the metrics keep "
            "counting them). Once, or --every SECONDS as a task that repeats on the worker.")

    def add_arguments(self, parser):
        parser.add_argument("--every", type=int, metavar="SECONDS",
                            help="instead of pruning now, queue a prune task that repeats every SECONDS")

    def handle(self, every, **options):
        if every:
            if every < 60:
                raise CommandError("--every takes at least 60 seconds")
            if schedule_periodic(prune_audit_trail, every):
                self.stdout.write(f"audit pruning queued for the worker, every {every} s")
            else:
                self.stdout.write("an audit pruning is already queued: its chain goes on (nothing added)")
            return
        pruned = prune_credential_events()
        self.stdout.write(f"{pruned} audit row(s) older than {settings.AUDIT_RETENTION_DAYS} days deleted")
