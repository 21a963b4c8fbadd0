from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from backups.replicas import DEFAULT_DATABASE, UnreadableReplica
from backups.models import Restore
from backups.restore import RestoreRefused, advance_restore, plan_restore, request_restore
from backups.window import EmptyReplica, OutsideWindow, RestorePoint, parse_moment, parse_txid
from teams.services import get_team

# The steps built so far (backups.restore.advance_restore): the preview and the swap are not.
BUILT_STEPS = (Restore.State.REQUESTED, Restore.State.VOLUME_CREATED)


def describe(point: RestorePoint) -> str:
    return f"txid {point.txid_hex} at {point.time.isoformat(timespec='milliseconds')}"


def every(step: timedelta | None) -> str:
    return f"one every ~{step.total_seconds():.1f} s" if step is not None else "one file"


class Command(BaseCommand):
    help = ("Restore a team's database to a point in time into a new volume (the preview and the swap are not "
            "built yet). --dry-run reads the replica with read-only credentials, prints its restorable window and what "
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
        try:
            team = get_team(slug)
            timestamp = parse_moment(timestamp) if timestamp is not None else None
            txid = parse_txid(txid) if txid is not None else None
            if not dry_run:
                return self.restore(team, database=database, timestamp=timestamp, txid=txid)
            window, plan = plan_restore(team, database=database, timestamp=timestamp, txid=txid,
                                        actor="manage.py restore")
        except RestoreRefused as error:
            raise CommandError(str(error)) from None
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

    def restore(self, team, **target) -> None:
        restore = request_restore(team, **target, actor="manage.py restore")
        self.stdout.write(f"{restore}: requested (restore id {restore.pk})")
        while restore.state in BUILT_STEPS:
            restore = advance_restore(restore, actor="manage.py restore")
            self.stdout.write(f"{restore}: {restore.get_state_display().lower()}")
        self.stdout.write(f"restored into the new volume {restore.volume}; the live volume is unchanged. "
                          "The preview and the swap are not built yet.")
