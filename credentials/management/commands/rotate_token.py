from django.core.management.base import BaseCommand

from credentials.tokens import rotate_team_token

from ._team_argument import team_from_slug


class Command(BaseCommand):
    help = "Revoke the team's token and print the new one. The old one stops working at once."

    def add_arguments(self, parser):
        parser.add_argument("slug")

    def handle(self, slug, **options):
        team = team_from_slug(slug)
        token = rotate_team_token(team)
        self.stderr.write(f"team {team.slug}: token rotated to generation {team.token_generation}")
        self.stdout.write(token)
