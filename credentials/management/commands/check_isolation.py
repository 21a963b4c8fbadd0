from django.core.management.base import BaseCommand, CommandError

from credentials.broker import BrokerUnavailable
from credentials.isolation import probe_teams, run_isolation_checks

from ._team_argument import team_from_slug


class Command(BaseCommand):
    help = (
        "Mint credentials for two teams on the configured storage and prove each can use its own prefix and is "
        "denied on the other's. Exits non-zero on any leak. Without slugs, two disabled probe teams are used."
    )

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*", metavar="SLUG", help="two team slugs (optional)")

    def handle(self, slugs, **options):
        if slugs and len(slugs) != 2:
            raise CommandError("give two team slugs, or none to use the probe teams")
        team_a, team_b = (team_from_slug(slugs[0]), team_from_slug(slugs[1])) if slugs else probe_teams()
        try:
            checks = run_isolation_checks(team_a, team_b)
        except BrokerUnavailable as error:
            raise CommandError(f"could not mint credentials: {error}") from None
        rows = [("result", "team", "operation", "target", "expected", "actual")]
        rows += [("PASS" if c.passed else "FAIL", c.actor, c.operation, c.target, c.expected,
                  f"{c.actual} {c.detail}".strip()) for c in checks]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        failed = [c for c in checks if not c.passed]
        if failed:
            raise CommandError(f"isolation check FAILED: {len(failed)} of {len(checks)} checks")
        self.stdout.write(self.style.SUCCESS(f"isolation holds: {len(checks)} of {len(checks)} checks passed"))
