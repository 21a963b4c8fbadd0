from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from instances.fleet import provision_fleet, teams_needing_provisioning
from instances.provisioning import ProvisioningBusy, provision
from instances.services import request_provisioning
from teams.services import get_team

ACTOR = "manage.py provision"


class Command(BaseCommand):
    help = "(Re)provision a team, or every team not running: safe at any time, it finishes what a run left."

    def add_arguments(self, parser):
        parser.add_argument("slug", nargs="?")
        parser.add_argument("--all", action="store_true", help="every active team without a running instance")
        parser.add_argument("--now", action="store_true", help="run here and wait, instead of queueing for the worker")
        parser.add_argument("--concurrency", type=int, default=8, help="with --all --now: teams at a time")

    def handle(self, slug, all, now, concurrency, **options):
        if bool(slug) == bool(all):
            raise CommandError("name one team, or use --all")
        teams = teams_needing_provisioning() if all else [self._team(slug)]
        if not now:
            for team in teams:
                request_provisioning(team, actor=ACTOR)
            self.stdout.write(f"provisioning queued for {len(teams)} team(s)")
            return
        if all:
            self._fleet(teams, concurrency)
            return
        try:
            instance = provision(teams[0], actor=ACTOR)
        except ProvisioningBusy as busy:
            raise CommandError(str(busy)) from None
        except Exception as error:
            raise CommandError(f"provisioning failed: {error}") from None
        self.stdout.write(f"{teams[0].slug}: {instance.state} at {instance.url}")

    def _fleet(self, teams, concurrency):
        from tqdm import tqdm

        with tqdm(total=len(teams), unit="team", desc="provisioning", file=self.stderr) as bar:
            result = provision_fleet(teams, actor=ACTOR, concurrency=concurrency,
                                     progress=lambda team, outcome: bar.update())
        self.stdout.write(f"{len(result.running)} running, {len(result.failed)} failed")
        for team_id, reason in sorted(result.failed.items()):
            self.stdout.write(f"  team {team_id}: {reason}")
        if result.failed:
            raise CommandError(f"{len(result.failed)} team(s) failed")

    def _team(self, slug):
        try:
            return get_team(slug)
        except ValidationError as error:
            raise CommandError(error.messages[0]) from None
