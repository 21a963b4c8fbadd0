from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from instances.services import create_team_and_provision


class Command(BaseCommand):
    help = "Create a team. Its slug becomes its subdomain; its id names its storage prefix team-<id>/."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="", help="display name (default: the slug)")
        parser.add_argument("--region", default="", help="one of CLOUDCTL_REGIONS (default: the first)")

    def handle(self, slug, name, region, **options):
        try:
            team = create_team_and_provision(slug, name, region, actor="manage.py create_team")
        except ValidationError as error:
            raise CommandError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items()))
        self.stdout.write(f"created team {team.slug} (id {team.pk}, prefix {team.storage_prefix})")
