from django.core.management.base import BaseCommand, CommandError

from instances.backends import BackendError
from instances.reconcile import REPORTED, reconcile


class Command(BaseCommand):
    help = ("Compare every backend with the database: restart crashed and missing instances through provisioning "
            "(a crash loop is left failed), repair extra machines, wrong images, stale leases and secrets behind; "
            "report orphans (--prune deletes them). Safe at any time. `manage.py schedule_periodic` queues it to "
            "repeat on the worker, every CLOUDCTL_RECONCILE_EVERY.")

    def add_arguments(self, parser):
        parser.add_argument("--prune", action="store_true", help="delete apps tagged as ours that have no team")
        parser.add_argument("--dry-run", action="store_true", help="report only, change nothing")

    def handle(self, prune, dry_run, **options):
        try:
            findings = reconcile(actor="manage.py reconcile", prune=prune, dry_run=dry_run)
        except BackendError as error:
            raise CommandError(str(error)) from None
        if not findings:
            self.stdout.write(self.style.SUCCESS("no drift"))
            return
        for finding in findings:
            self.stdout.write(f"{finding.kind:18} {finding.subject:40} {finding.outcome}: {finding.detail}")
        decisions = sum(finding.outcome == REPORTED for finding in findings)
        self.stdout.write(f"{len(findings)} finding(s), {decisions} needing a decision"
                          + (" (dry run: nothing changed)" if dry_run else ""))
