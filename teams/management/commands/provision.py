from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from teams.provisioning import ProvisioningBusy, provision
from teams.services import get_team, request_provisioning


class Command(BaseCommand):
    help = "(Re)provision a team: safe at any time, it finishes whatever an interrupted run left."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--now", action="store_true", help="run here and wait, instead of queueing for the worker")

    def handle(self, slug, now, **options):
        try:
            team = get_team(slug)
        except ValidationError as error:
            raise CommandError(error.messages[0]) from None
        if not now:
            request_provisioning(team)
            self.stdout.write(f"provisioning of {team.slug} queued")
            return
        try:
            instance = provision(team)
        except ProvisioningBusy as busy:
            raise CommandError(str(busy)) from None
        except Exception as error:
            raise CommandError(f"provisioning failed: {error}") from None
        self.stdout.write(f"{team.slug}: {instance.state} at {instance.url}")
