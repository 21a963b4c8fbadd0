from django.core.management.base import BaseCommand

from instances.services import rotate_token_and_restart
from teams.tokens import team_token

from ._team_argument import team_from_slug


class Command(BaseCommand):
    help = ("Revoke the team's token (and its signal URLs) and print the new one; the old one stops working at once. "
            "Then, as the dashboard does, queue a restart so the instance runs with the new token.")

    def add_arguments(self, parser):
        parser.add_argument("slug")

    def handle(self, slug, **options):
        team = team_from_slug(slug)
        restart = rotate_token_and_restart(team, actor="manage.py rotate_token")
        self.stderr.write(f"team {team.slug}: token rotated to generation {team.token_generation}"
                          + ("; restart queued (the worker brings the new token into the instance)" if restart
                             else "; no instance to restart"))
        self.stdout.write(team_token(team))
