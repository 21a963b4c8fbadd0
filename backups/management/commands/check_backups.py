from django.core.management.base import BaseCommand

from backups.services import check_backup_freshness


class Command(BaseCommand):
    help = ("Alert (log + team timeline) on running teams whose last backup heartbeat is older than "
            "CLOUDCTL_BACKUP_STALE_AFTER, once (`manage.py schedule_periodic` queues it to repeat on the worker, "
            "every CLOUDCTL_BACKUP_CHECK_EVERY).")

    def handle(self, **options):
        flagged = check_backup_freshness(actor="manage.py check_backups")
        for team in flagged:
            self.stdout.write(f"ALERT {team.slug}: backups stale")
        self.stdout.write(f"{len(flagged)} team(s) newly stale")
