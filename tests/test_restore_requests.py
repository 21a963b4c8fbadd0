"""The persisted restore request (backups.models.Restore): pinned to the point the plan chose on the real replica,
refused (and not recorded) outside the window or without the permission; cancelling is idempotent and refused once
swapped in; the steps create the new volume and restore exactly the pinned point into it with the real Litestream
(local backend), and the steps not built say so."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied

from backups.models import Restore
from backups.restore import RestoreRefused, advance_restore, plan_restore
from backups.restore_requests import cancel_restore, request_restore
from backups.window import OutsideWindow
from instances.machines import get_backend
from instances.models import Instance

from .test_litestream import REGION, all_rows
from .test_restore_dry_run import replicated  # noqa: F401  (the fixture: rows at t1, t2, t3 on the local S3)


def test_a_request_is_pinned_to_the_planned_point(replicated):  # noqa: F811
    team, t1 = replicated["team"], replicated["written_at"][0]
    between = replicated["between"]
    with pytest.raises(RestoreRefused, match="has no instance"):
        request_restore(team, database="data.db", timestamp=between, actor="test")
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
    _, plan = plan_restore(team, database="data.db", timestamp=between, actor="test")
    restore = request_restore(team, database="data.db", timestamp=between, actor="test")
    restore.refresh_from_db()
    assert (restore.state, restore.target_txid, restore.target_time) == (
        Restore.State.REQUESTED, plan.point.txid, plan.point.time)
    assert restore.requested_by == "test"
    cancel_restore(restore, actor="test")  # one restore in progress per team
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


@pytest.fixture
def requested(make_team, settings, tmp_path):
    """A restore requested for a team whose instance is on the local backend (nothing started)."""
    settings.LOCAL_INSTANCES_DIR = str(tmp_path / "instances")
    team = make_team()
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
    return Restore.objects.create(team=team, database="data.db", target_txid=3, target_time=datetime.now(UTC),
                                  requested_by="test")


def test_the_first_step_creates_a_new_volume_apart_from_the_live_one(requested, tmp_path):
    restore = advance_restore(requested, actor="test")
    expected = tmp_path / "instances" / f"team-{restore.team_id}" / "restores" / str(restore.pk) / "data"
    assert (restore.state, Path(restore.volume)) == (Restore.State.VOLUME_CREATED, expected)
    assert expected.is_dir() and not any(expected.iterdir())
    # Creating it again (a run after a crash between the backend's call and the save) is harmless.
    instance = restore.team.instance
    assert get_backend(instance.backend).create_restore_volume(instance, restore.pk) == {"volume": str(expected)}


def test_a_backend_without_restores_or_a_team_without_an_instance_fails_the_restore(requested, make_team):
    Instance.objects.filter(team=requested.team).update(backend="tests.test_provisioning.ScriptedBackend")
    restore = advance_restore(requested, actor="test")
    assert restore.state == Restore.State.FAILED
    # Every backend of the project restores now: the scripted one of the provisioning tests does not.
    assert "not supported on the ScriptedBackend backend" in restore.message
    assert restore.volume == ""
    homeless = Restore.objects.create(team=make_team(), database="data.db", target_txid=3,
                                      target_time=datetime.now(UTC), requested_by="test")
    homeless = advance_restore(homeless, actor="test")
    assert (homeless.state, homeless.message) == (Restore.State.FAILED, f"team {homeless.team.slug} has no instance "
                                                                        "to restore into")


def test_a_restore_between_t1_and_t2_writes_exactly_t1s_rows_into_the_new_volume(replicated, s3_env, settings,  # noqa: F811
                                                                                 tmp_path):
    settings.LOCAL_INSTANCES_DIR = str(tmp_path / "instances")
    settings.INSTANCE_S3_ENDPOINT, settings.INSTANCE_S3_REGION = s3_env.endpoint_url, REGION
    team, t2 = replicated["team"], replicated["written_at"][1]
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
    restore = request_restore(team, database="data.db", timestamp=replicated["between"], actor="test")
    restore = advance_restore(advance_restore(restore, actor="test"), actor="test")
    assert restore.state == Restore.State.RESTORED
    restored = Path(restore.volume) / "data.db"
    assert all_rows(restored) == [(n, f"note {n} " + "x" * (n % 97)) for n in range(1, 11)]
    assert not list(Path(restore.volume).parent.glob("*.partial"))
    # A rerun (a crash after Litestream finished, before the save) leaves the checked database as it is.
    instance = team.instance
    before = restored.stat().st_mtime_ns
    get_backend(instance.backend).restore_into_volume(instance, restore.pk, "data.db", None)
    assert restored.stat().st_mtime_ns == before
    # The live volume is untouched.
    assert not (tmp_path / "instances" / f"team-{team.pk}" / "data" / "data.db").exists()
    # Litestream's failure (a txid the replica never had) fails the restore with its reason; nothing lands in a
    # volume, and the failed restore's volume is deleted.
    unknown = Restore.objects.create(team=team, database="data.db", target_txid=restore.target_txid + 10**6,
                                     target_time=t2, requested_by="test")
    unknown = advance_restore(unknown, actor="test")
    volume = Path(unknown.volume)
    unknown = advance_restore(unknown, actor="test")
    assert unknown.state == Restore.State.FAILED
    assert unknown.message.startswith("litestream restore of data.db failed: ")
    assert not any(volume.iterdir())
    unknown = advance_restore(unknown, actor="test")
    assert unknown.volumes_deleted_at is not None and not volume.exists()
