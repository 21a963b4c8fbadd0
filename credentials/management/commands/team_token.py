from django.core.management.base import BaseCommand

from teams.tokens import team_token

from ._team_argument import team_from_slug


class Command(BaseCommand):
    help = "Print the team's current token (what its instance holds as CLOUDCTL_TOKEN). Treat it as a secret."

    def add_arguments(self, parser):
        parser.add_argument("slug")

    def handle(self, slug, **options):
        self.stdout.write(team_token(team_from_slug(slug)))
