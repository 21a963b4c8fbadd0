from django.core.management.base import BaseCommand, CommandError

from backups.services import check_backup_freshness
from backups.tasks import check_backups
from instances.tasks import schedule_periodic


class Command(BaseCommand):
    help = ("Alert (log + team timeline) on running teams whose last backup heartbeat is older than "
            "CLOUDCTL_BACKUP_STALE_AFTER. Once, or --every SECONDS as a task that repeats on the worker.")

    def add_arguments(self, parser):
        parser.add_argument("--every", type=int, metavar="SECONDS",
                            help="instead of checking now, queue a check task that repeats every SECONDS")

    def handle(self, every, **options):
        if every:
            if every < 30:
                raise CommandError("--every takes at least 30 seconds")
            if schedule_periodic(check_backups, every):
                self.stdout.write(f"backup check queued for the worker, every {every} s")
            else:
                self.stdout.write("a backup check is already queued: its chain goes on (nothing added)")
            return
        flagged = check_backup_freshness(actor="manage.py check_backups")
        for team in flagged:
            self.stdout.write(f"ALERT {team.slug}: backups stale")
        self.stdout.write(f"{len(flagged)} team(s) newly stale")
