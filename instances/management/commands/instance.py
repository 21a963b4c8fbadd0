from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from instances import actions
from instances.backends import BackendError
from instances.machines import get_backend
from instances.models import Instance
from teams.services import get_team

STATUS = "status"


class Command(BaseCommand):
    help = ("Show a team's instance, or do one of the operator actions to it now, here: "
            + "; ".join(f"{action.kind}: {action.help}" for action in actions.ACTIONS) + ".")

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("action", choices=[STATUS, *(action.kind for action in actions.ACTIONS)])
        parser.add_argument("--confirm", metavar="SLUG", help=", ".join(
            action.kind for action in actions.ACTIONS if action.confirm_text) + ": repeat the team's slug")

    def handle(self, slug, action, confirm, **options):
        try:
            team = get_team(slug)
        except ValidationError as error:
            raise CommandError(error.messages[0]) from None
        if action != STATUS:
            registered = actions.action_for(action)
            if registered.confirm_text and confirm != team.slug:
                raise CommandError(f"{registered.confirm_text}: confirm with --confirm {team.slug}")
            try:
                registered.perform(team, actor="manage.py instance")
            except Exception as error:
                raise CommandError(f"{action} failed: {error}") from None
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
