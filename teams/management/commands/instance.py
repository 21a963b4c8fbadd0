from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from teams.backends import BackendError, get_backend
from teams.models import Instance
from teams.services import destroy_instance, get_team, stop_instance


class Command(BaseCommand):
    help = "Show, stop or destroy a team's instance (destroy keeps its backups). `provision` starts it."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("action", choices=["status", "stop", "destroy"])
        parser.add_argument("--confirm", metavar="SLUG", help="destroy: repeat the team's slug")

    def handle(self, slug, action, confirm, **options):
        try:
            team = get_team(slug)
        except ValidationError as error:
            raise CommandError(error.messages[0]) from None
        if action == "stop":
            stop_instance(team, actor="manage.py instance")
        elif action == "destroy":
            if confirm != team.slug:
                raise CommandError(f"destroying removes the volume; confirm with --confirm {team.slug}")
            destroy_instance(team, actor="manage.py instance")
        # Read, never create: a status must not leave an instance row behind (`provision` makes one).
        instance = Instance.objects.filter(team=team).first()
        if instance is None:
            self.stdout.write(f"{team.slug}: no instance (`manage.py provision {team.slug}` creates it)")
            return
        self.stdout.write(f"{team.slug}: {instance.state} (wants {instance.desired_state}; backend sees "
                          f"{self._observed(instance)}) {team.subdomain_url} (instance at {instance.url or '-'})")
        if instance.last_error:
            self.stdout.write(f"last error: {instance.last_error}")

    @staticmethod
    def _observed(instance) -> str:
        """What really runs, which the database's state only records (an instance can crash without telling it)."""
        try:
            return get_backend(instance.backend).observe(instance).value
        except BackendError as error:
            return f"nothing it can tell ({error})"
