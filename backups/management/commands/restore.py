from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from backups.replicas import DEFAULT_DATABASE, UnreadableReplica
from backups.restore import plan_restore
from backups.window import EmptyReplica, OutsideWindow, RestorePoint, parse_moment, parse_txid
from teams.services import get_team

NOT_BUILT = ("restoring into a new volume is not built yet: nothing was changed. "
             "Add --dry-run to see what would be restored.")


def describe(point: RestorePoint) -> str:
    return f"txid {point.txid_hex} at {point.time.isoformat(timespec='milliseconds')}"


def every(step: timedelta | None) -> str:
    return f"one every ~{step.total_seconds():.1f} s" if step is not None else "one file"


class Command(BaseCommand):
    help = ("Restore a team's database to a point in time into a new volume (not built yet: only --dry-run "
            "works). --dry-run reads the replica with read-only credentials, prints its restorable window and what "
            "would be restored (txid, time, size) and changes nothing; a point outside the window is refused "
            "with the nearest valid points.")

    def add_arguments(self, parser):
        parser.add_argument("slug")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--timestamp", help="ISO 8601 with a zone, e.g. 2026-11-26T17:40:00Z")
        target.add_argument("--txid", help="a transaction id in hex, as `litestream ltx` prints it")
        target.add_argument("--latest", action="store_true", help="the newest restorable point")
        parser.add_argument("--database", default=DEFAULT_DATABASE, help=f"default {DEFAULT_DATABASE}")
        parser.add_argument("--dry-run", action="store_true", help="print what would be restored; change nothing")

    def handle(self, slug, *, timestamp, txid, latest, database, dry_run, **options):
        if not dry_run:
            raise CommandError(NOT_BUILT)
        try:
            team = get_team(slug)
            timestamp = parse_moment(timestamp) if timestamp is not None else None
            txid = parse_txid(txid) if txid is not None else None
            window, plan = plan_restore(team, database=database, timestamp=timestamp, txid=txid,
                                        actor="manage.py restore")
        except ValidationError as error:
            raise CommandError(error.messages[0]) from None
        except (ValueError, UnreadableReplica, EmptyReplica) as error:
            raise CommandError(f"team {slug}, {database}: {error}") from None
        except OutsideWindow as refused:
            nearest = "; ".join(describe(point) for point in refused.nearest)
            raise CommandError(f"team {slug}, {database}: refused: {refused}. Nearest restorable: {nearest}") from None
        self.stdout.write(f"team {team.slug}, database {database}")
        self.stdout.write(f"restorable window: {describe(window.oldest)} to {describe(window.newest)} "
                          f"({len(window.points)} points)")
        for span in window.levels:
            self.stdout.write(f"  level {span.level}: {span.files} files, {span.oldest.isoformat(timespec='seconds')} "
                              f"to {span.newest.isoformat(timespec='seconds')}, {every(span.step)}")
        self.stdout.write(f"would restore: {describe(plan.point)}, database {plan.database_bytes} bytes, "
                          f"from {len(plan.files)} LTX files ({plan.download_bytes} bytes to download)")
        self.stdout.write("dry run: nothing was changed")
