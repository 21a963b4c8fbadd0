"""The persisted restore request (backups.models.Restore): pinned to the point the plan chose on the real replica,
refused (and not recorded) outside the window or without the permission; cancelling is idempotent and refused once
swapped in."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied

from backups.models import Restore
from backups.restore import RestoreRefused, cancel_restore, plan_restore, request_restore
from backups.window import OutsideWindow

from .test_restore_dry_run import replicated  # noqa: F401  (the fixture: rows at t1, t2, t3 on the local S3)


def test_a_request_is_pinned_to_the_planned_point(replicated):  # noqa: F811
    team, (t1, t2, _) = replicated["team"], replicated["written_at"]
    between = t1 + (t2 - t1) / 2
    _, plan = plan_restore(team, database="data.db", timestamp=between, actor="test")
    restore = request_restore(team, database="data.db", timestamp=between, actor="test")
    restore.refresh_from_db()
    assert (restore.state, restore.target_txid, restore.target_time) == (
        Restore.State.REQUESTED, plan.point.txid, plan.point.time)
    assert restore.requested_by == "test"
    with pytest.raises(OutsideWindow):
        request_restore(team, database="data.db", timestamp=t1 - timedelta(hours=1), actor="test")
    assert list(Restore.objects.filter(team=team)) == [restore]


def test_a_user_without_the_permission_is_refused(make_team, django_user_model):
    team = make_team()
    operator = django_user_model.objects.create_user("operator", is_staff=True)
    with pytest.raises(PermissionDenied):
        request_restore(team, database="data.db", timestamp=datetime.now(UTC), actor=operator)
    restore = Restore.objects.create(team=team, database="data.db", target_txid=3, target_time=datetime.now(UTC),
                                     requested_by="test")
    with pytest.raises(PermissionDenied):
        cancel_restore(restore, actor=operator)
    assert not Restore.objects.exclude(pk=restore.pk).exists()
    restore.refresh_from_db()
    assert restore.state == Restore.State.REQUESTED


def test_cancelling_is_idempotent_and_refused_once_swapped(make_team):
    team = make_team()
    restore = Restore.objects.create(team=team, database="data.db", target_txid=3, target_time=datetime.now(UTC),
                                     requested_by="test")
    assert cancel_restore(restore, actor="test").state == Restore.State.CANCELLED
    assert cancel_restore(restore, actor="test").state == Restore.State.CANCELLED
    restore.refresh_from_db()
    assert restore.state == Restore.State.CANCELLED
    swapped = Restore.objects.create(team=team, database="data.db", target_txid=3, target_time=datetime.now(UTC),
                                     requested_by="test", state=Restore.State.SWAPPED)
    with pytest.raises(RestoreRefused, match="swapped in"):
        cancel_restore(swapped, actor="test")
    swapped.refresh_from_db()
    assert swapped.state == Restore.State.SWAPPED
