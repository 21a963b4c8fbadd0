from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from backups.replicas import DEFAULT_DATABASE, UnreadableReplica
from backups.models import Restore
from backups.restore import RestoreRefused, plan_restore, run_restore
from backups.restore_requests import cancel_restore, confirm_swap, request_restore, request_swap_back
from backups.window import EmptyReplica, OutsideWindow, RestorePoint, parse_moment, parse_txid
from teams.services import get_team

ACTOR = "manage.py restore"


def describe(point: RestorePoint) -> str:
    return f"txid {point.txid_hex} at {point.time.isoformat(timespec='milliseconds')}"


def every(step: timedelta | None) -> str:
    return f"one every ~{step.total_seconds():.1f} s" if step is not None else "one file"


class Command(BaseCommand):
    help = ("Restore a team's database to a point in time into a new volume, integrity-checked, and start a preview "
            "of it; then --swap ID makes it live (the replaced volume is kept CLOUDCTL_RESTORE_KEEP_DAYS), --swap-back "
            "ID puts the replaced volume back, --cancel ID drops a restore not swapped in. --dry-run reads the "
            "replica with read-only credentials, prints its restorable window and what would be restored (txid, "
            "time, size) and changes nothing; a point outside the window is refused with the nearest valid points. "
            "Each step runs here, in the foreground (the worker's queued run finds it done).")

    def add_arguments(self, parser):
        parser.add_argument("slug")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--timestamp", help="ISO 8601 with a zone, e.g. 2026-11-26T17:40:00Z")
        target.add_argument("--txid", help="a transaction id in hex, as `litestream ltx` prints it")
        target.add_argument("--latest", action="store_true", help="the newest restorable point")
        target.add_argument("--swap", type=int, metavar="ID", help="swap restore ID's previewed volume in")
        target.add_argument("--swap-back", type=int, metavar="ID", help="put back the volume restore ID replaced")
        target.add_argument("--cancel", type=int, metavar="ID", help="cancel restore ID (not swapped in)")
        parser.add_argument("--database", default=DEFAULT_DATABASE, help=f"default {DEFAULT_DATABASE}")
        parser.add_argument("--dry-run", action="store_true", help="print what would be restored; change nothing")

    def handle(self, slug, *, timestamp, txid, latest, database, dry_run, swap, swap_back, cancel, **options):
        try:
            team = get_team(slug)
            for restore_id, change in ((swap, confirm_swap), (swap_back, request_swap_back), (cancel, cancel_restore)):
                if restore_id is not None:
                    if dry_run:
                        raise CommandError("--dry-run applies to a new restore only")
                    return self.change(team, restore_id, change)
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
        restore = request_restore(team, **target, actor=ACTOR)
        self.stdout.write(f"{restore}: requested (restore id {restore.pk})")
        self.report(run_restore(restore, actor=ACTOR))

    def change(self, team, restore_id: int, change) -> None:
        restore = Restore.objects.filter(team=team, pk=restore_id).first()
        if restore is None:
            raise CommandError(f"team {team.slug} has no restore {restore_id}")
        self.report(run_restore(change(restore, actor=ACTOR), actor=ACTOR))

    def report(self, restore: Restore) -> None:
        self.stdout.write(f"{restore}: {restore.get_state_display().lower()}")
        if restore.message:
            self.stdout.write(restore.message)
        if restore.state == Restore.State.PREVIEW_RUNNING:
            self.stdout.write(f"restored into the new volume {restore.volume}; the live volume is unchanged. "
                              f"Look at the preview (the console's backups page), then: "
                              f"manage.py restore {restore.team.slug} --swap {restore.pk}")
        elif restore.state == Restore.State.SWAPPED:
            self.stdout.write(f"swapped in; the replaced volume is kept {settings.RESTORE_KEEP_DAYS} days: "
                              f"manage.py restore {restore.team.slug} --swap-back {restore.pk} undoes it")
        elif restore.state == Restore.State.FAILED:
            raise CommandError(f"{restore} failed")
