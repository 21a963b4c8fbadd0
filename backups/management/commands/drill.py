from django.core.management.base import BaseCommand, CommandError

from backups.drills import drill_due_teams, drill_team
from teams.models import Team


class Command(BaseCommand):
    help = "Restore drill: restore a team's latest backup in a scratch directory, check it in full, fingerprint it."

    def add_arguments(self, parser):
        parser.add_argument("slug", nargs="?", help="the team to drill")
        parser.add_argument("--due", action="store_true", help="drill the teams that are due, within the budget")

    def handle(self, slug, due, **options):
        if bool(slug) == due:
            raise CommandError("name a team or --due, not both")
        if due:
            drills = drill_due_teams(actor="command drill")
        else:
            team = Team.objects.filter(slug=slug).first()
            if team is None:
                raise CommandError(f"no team {slug!r}")
            drills = [drill_team(team, actor="command drill")]
        for drill in drills:
            self.stdout.write(f"{drill.team.slug}: {drill.status} in {drill.duration_seconds:.2f}s"
                              f"{f' (restore {drill.restore_seconds:.2f}s)' if drill.restore_seconds else ''}"
                              f"{f', txid {drill.restored_txid}' if drill.restored_txid else ''}"
                              f"{f', lag {drill.lag_seconds:.0f}s' if drill.lag_seconds is not None else ''}"
                              f"{f': {drill.message}' if drill.message else ''}")
        if any(not drill.passed for drill in drills):
            raise CommandError("a drill failed")
