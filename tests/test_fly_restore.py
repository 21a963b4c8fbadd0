"""Point-in-time restore on the Fly backend, against the spec-checking fake Machines API: the restore's state machine
(backups.restore) driven end to end, a restore Machine on a new volume that becomes the instance on the swap, the
replaced Machine kept stopped and swapped back, what the restore kept deleted after its keep period; a crash
between steps finished by a rerun; reconcile never adopting nor destroying a restore's Machines."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from backups.models import Restore
from backups.restore import advance_restore, preview_secret, run_restore, tend_restores
from backups.restore_requests import cancel_restore, confirm_swap, request_swap_back
from fakefly import ResponseLost, Unavailable
from instances.backends.fly import KEPT_MARK, RESTORE_MARK
from instances.models import Instance
from instances.provisioning import provision
from instances.reconcile import reconcile_instance


@pytest.fixture
def restore(fly, fake, make_team, monkeypatch):
    """A running team on the fake Fly and a restore of its data.db requested (as request_restore records it)."""
    # The Fly backend restores with the team's own token on its restore Machine: the read-only keys the
    # control plane mints for the local backend are never used, so any will do here.
    monkeypatch.setattr("backups.replicas.read_only_credentials", lambda team, *, actor: SimpleNamespace(
        access_key_id="AKIDREADONLY", secret_access_key="read-only-secret", session_token="token"))
    team = make_team()
    provision(team, actor="test")
    return Restore.objects.create(team=team, database="data.db", target_txid=0x2a, target_time=datetime.now(UTC),
                                  requested_by="test")


def live_machines(fake, app):
    return [m for m in fake.machines.values() if m.app_name == app and m.state not in ("destroyed", "destroying")]


def live_volumes(fake, app):
    return [v for v in fake.volumes.values() if v.app_name == app and v.state == "created"]


def test_a_restore_runs_through_preview_swap_swap_back_and_deletion(restore, fake, settings, caplog):
    caplog.set_level("DEBUG")
    instance = Instance.objects.get(team=restore.team)
    app, first = instance.resources["app"], dict(instance.resources)

    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.PREVIEW_RUNNING, restore.message
    restored = fake.machine(restore.preview_url.split("//")[1].split(".")[0])
    assert restore.preview_url == f"http://{restored.id}.vm.{app}.internal:8080"
    assert restored.state == "started"
    assert restored.config["mounts"] == [{"volume": restore.volume, "path": "/data"}]
    assert restore.volume != first["volume"]
    env = restored.config["env"]
    assert (env["CLOUDCTL_RESTORE_DATABASE"], env["CLOUDCTL_RESTORE_TXID"]) == ("data.db", "000000000000002a")
    assert env["CLOUDCTL_PREVIEW_SECRET"] == preview_secret(restore)
    assert "read-only-secret" not in str(restored.config) and "AKIDREADONLY" not in str(restored.config)
    assert restored.config["metadata"][RESTORE_MARK] == str(restore.pk)
    assert "services" not in restored.config  # reached on the private network only
    assert "fly POST" in caplog.text and preview_secret(restore) not in caplog.text  # the calls logged, not it
    assert fake.machine(first["machine"]).state == "started"  # the live instance is untouched
    assert fake.refused == []

    confirm_swap(restore, actor="test")
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.SWAPPED, restore.message
    instance.refresh_from_db()
    assert (instance.resources["machine"], instance.resources["volume"]) == (restored.id, restore.volume)
    assert restored.state == "started"
    assert not set(restored.config["env"]) & {"CLOUDCTL_RESTORE_DATABASE", "CLOUDCTL_PREVIEW_SECRET"}
    assert RESTORE_MARK not in restored.config["metadata"] and restored.config["services"]
    previous = fake.machine(first["machine"])
    assert previous.state == "stopped"
    assert previous.config["metadata"][KEPT_MARK] == str(restore.pk)
    assert "services" not in previous.config  # Fly's proxy must not start it beside the instance
    assert previous.mounted_volume_ids == [first["volume"]]

    request_swap_back(restore, actor="test")
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.SWAPPED_BACK, restore.message
    instance.refresh_from_db()
    assert (instance.resources["machine"], instance.resources["volume"]) == (first["machine"], first["volume"])
    assert previous.state == "started" and previous.config["services"]
    assert KEPT_MARK not in previous.config["metadata"]
    assert restored.state == "stopped" and restored.config["metadata"][KEPT_MARK] == str(restore.pk)

    tend_restores(actor="test")  # kept for its keep period: nothing deleted yet
    assert len(live_machines(fake, app)) == 2 and len(live_volumes(fake, app)) == 2
    Restore.objects.filter(pk=restore.pk).update(
        swapped_back_at=timezone.now() - timedelta(days=settings.RESTORE_KEEP_DAYS, hours=1))
    tend_restores(actor="test")
    restore.refresh_from_db()
    assert restore.volumes_deleted_at is not None, restore.message
    assert [m.id for m in live_machines(fake, app)] == [first["machine"]]
    assert [v.id for v in live_volumes(fake, app)] == [first["volume"]]
    assert fake.refused == []


def test_a_crash_between_steps_is_finished_by_the_rerun_with_one_restore_volume_and_machine(restore, fake):
    instance = Instance.objects.get(team=restore.team)
    app = instance.resources["app"]
    fake.inject("create_volume", ResponseLost(502))  # created, but the answer is lost
    fake.inject("create_machine", ResponseLost(502))
    fake.inject("update_machine", Unavailable(503), calls=[1, 2, 3, 4, 5, 6])  # the preview's update, retried
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.RESTORED
    assert restore.message.startswith("will retry:")

    restore = tend_restores(actor="test")[0]
    assert restore.state == Restore.State.PREVIEW_RUNNING, restore.message
    assert len(live_volumes(fake, app)) == 2 and len(live_machines(fake, app)) == 2

    confirm_swap(restore, actor="test")
    fake.inject("update_machine", Unavailable(503), calls=[2, 3, 4, 5, 6, 7])  # the live one kept, not the swap
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.SWAPPING and restore.message.startswith("will retry:")
    restore = tend_restores(actor="test")[0]
    assert restore.state == Restore.State.SWAPPED, restore.message
    assert len(live_volumes(fake, app)) == 2 and len(live_machines(fake, app)) == 2
    assert fake.calls["create_machine"] == 2 and fake.calls["create_volume"] == 2  # the team's own, and one each
    assert fake.refused == []


def test_a_cancelled_preview_is_stopped_and_its_machine_and_volume_deleted(restore, fake):
    instance = Instance.objects.get(team=restore.team)
    app = instance.resources["app"]
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.PREVIEW_RUNNING, restore.message
    cancel_restore(restore, actor="test")
    restore = advance_restore(restore, actor="test")
    assert restore.volumes_deleted_at is not None, restore.message
    assert [m.id for m in live_machines(fake, app)] == [instance.resources["machine"]]
    assert [v.id for v in live_volumes(fake, app)] == [instance.resources["volume"]]


def test_reconcile_neither_adopts_nor_destroys_a_restores_machines(restore, fake):
    instance = Instance.objects.get(team=restore.team)
    app = instance.resources["app"]
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.PREVIEW_RUNNING, restore.message
    reconcile_instance(instance.pk, actor="test")
    assert len(live_machines(fake, app)) == 2
    instance.refresh_from_db()
    assert instance.resources["machine"] != restore.preview_url.split("//")[1].split(".")[0]

    confirm_swap(restore, actor="test")
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.SWAPPED, restore.message
    reconcile_instance(instance.pk, actor="test")
    instance.refresh_from_db()
    assert len(live_machines(fake, app)) == 2  # the kept one stays for the swap back
    assert fake.machine(instance.resources["machine"]).state == "started"


def test_provisioning_again_after_a_swap_keeps_the_restored_volume(restore, fake):
    restore = run_restore(restore, actor="test")
    confirm_swap(restore, actor="test")
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.SWAPPED, restore.message
    creates = fake.calls["create_volume"]
    provision(restore.team, actor="test")
    instance = Instance.objects.get(team=restore.team)
    assert instance.resources["volume"] == restore.volume
    assert fake.calls["create_volume"] == creates


def swap_in(restore):
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.PREVIEW_RUNNING, restore.message
    confirm_swap(restore, actor="test")
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.SWAPPED, restore.message
    return restore


def test_a_crash_between_destroying_a_kept_machine_and_deleting_its_volume_is_finished_by_the_rerun(restore, fake):
    instance = Instance.objects.get(team=restore.team)
    app, first = instance.resources["app"], dict(instance.resources)
    restore = swap_in(restore)
    Restore.objects.filter(pk=restore.pk).update(swapped_at=timezone.now() - timedelta(days=30))
    fake.inject("delete_volume", Unavailable(503), calls=range(1, 10))
    restore = advance_restore(restore, actor="test")
    assert restore.volumes_deleted_at is None and "will be retried" in restore.message
    assert fake.machine(first["machine"]).state == "destroyed"
    restore = advance_restore(restore, actor="test")
    assert restore.volumes_deleted_at is not None, restore.message
    assert [v.id for v in live_volumes(fake, app)] == [restore.volume]
    instance.refresh_from_db()
    assert [m.id for m in live_machines(fake, app)] == [instance.resources["machine"]]


def test_deleting_an_earlier_restores_kept_machine_leaves_what_a_later_one_keeps(restore, fake):
    instance = Instance.objects.get(team=restore.team)
    app, first = instance.resources["app"], dict(instance.resources)
    earlier = swap_in(restore)
    later = swap_in(Restore.objects.create(team=earlier.team, database="data.db", target_txid=0x2b,
                                           target_time=datetime.now(UTC), requested_by="test"))
    Restore.objects.filter(pk=earlier.pk).update(swapped_at=timezone.now() - timedelta(days=30))
    earlier = advance_restore(earlier, actor="test")
    assert earlier.volumes_deleted_at is not None, earlier.message
    # The earlier restore's kept Machine (the first one) is gone; its own Machine, kept by the later restore, stays.
    assert {v.id for v in live_volumes(fake, app)} == {earlier.volume, later.volume}
    assert first["volume"] not in {v.id for v in live_volumes(fake, app)}

    request_swap_back(later, actor="test")
    later = run_restore(later, actor="test")
    assert later.state == Restore.State.SWAPPED_BACK, later.message
    instance.refresh_from_db()
    assert instance.resources["volume"] == earlier.volume
    assert fake.machine(instance.resources["machine"]).state == "started"
    assert fake.refused == []
