"""The restore's state machine (backups/restore.py, backups/restore_requests.py) on a scripted backend: the path
to the preview and through swap and swap back, failures before the swap ending it, a swap never abandoned, one run
at a time, the instance held during a swap, the keep period, and what is refused. The real steps are tested on the
local backend (tests/test_restore_swap.py) and on the fake Fly API (tests/test_fly_restore.py)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from backups.models import Restore
from backups.restore import (
    RestoreRefused, advance_restore, preview_secret, run_restore, stop_previews, tend_restores,
)
from backups.restore_requests import cancel_restore, confirm_swap, request_swap_back
from instances.backends import BackendError, BackendUnavailable
from instances.backends.base import MachineBackend
from instances.holders import claim_row
from instances.machines import get_backend
from instances.models import Instance
from instances.provisioning import claim, release
from teams.models import TeamEvent

BACKEND = "tests.test_restore_states.ScriptedBackend"


class ScriptedBackend(MachineBackend):
    """Records the restore calls and raises what a test scripts for the next call of a method."""

    def __init__(self):
        super().__init__()
        self.calls, self.failures = [], {}

    def _call(self, name, *args):
        self.calls.append((name, *args))
        failure = self.failures.pop(name, None)
        if failure is not None:
            raise failure

    def create_restore_volume(self, instance, restore_id):
        self._call("create_restore_volume", restore_id)
        return {"volume": f"vol-restore-{restore_id}"}

    def restore_into_volume(self, instance, restore_id, database, source):
        self._call("restore_into_volume", restore_id, source.txid_hex)
        return {"database": database}

    def start_preview(self, instance, restore_id, secret):
        self._call("start_preview", restore_id, secret)
        return {"url": f"http://preview-{restore_id}.internal:8080/"}

    def stop_preview(self, instance, restore_id):
        self._call("stop_preview", restore_id)

    def swap_in_restore(self, instance, restore_id):
        self._call("swap_in_restore", restore_id)
        return {"volume": f"vol-restore-{restore_id}"}

    def swap_back_restore(self, instance, restore_id):
        self._call("swap_back_restore", restore_id)
        return {"volume": "vol-live"}

    def delete_restore_volumes(self, instance, restore_id):
        self._call("delete_restore_volumes", restore_id)

    # What a MachineBackend must have; a restore never calls them.
    def provisioning_steps(self):
        return []

    def observe(self, instance):
        raise AssertionError("not called by restores")

    def stop(self, instance):
        raise AssertionError("not called by restores")

    def start(self, instance):
        raise AssertionError("not called by restores")

    def running_image(self, instance):
        raise AssertionError("not called by restores")

    def destroy(self, instance):
        raise AssertionError("not called by restores")

    def update(self, instance, image, *, before_change=None):
        raise AssertionError("not called by restores")


@pytest.fixture
def backend(make_team, monkeypatch):
    get_backend.cache_clear()
    scripted = get_backend(BACKEND)
    yield scripted
    get_backend.cache_clear()


@pytest.fixture
def requested(make_team, backend, monkeypatch):
    """A restore as request_restore records it (its plan read from a real replica elsewhere), the queue muted."""
    team = make_team()
    Instance.objects.create(team=team, backend=BACKEND, state=Instance.State.RUNNING, resources={"volume": "vol-live"})
    return Restore.objects.create(team=team, database="data.db", target_txid=7, target_time=datetime.now(UTC),
                                  requested_by="test")


def queued_runs() -> list[list]:
    """The runs the requests queued (the tests run them themselves: the worker is tested elsewhere)."""
    return [result.args_kwargs["args"] for result in DBTaskResult.objects.filter(
        task_path="backups.tasks.run_restore_task").order_by("enqueued_at")]


@pytest.fixture(autouse=True)
def minted(monkeypatch):
    class Issued:
        access_key_id, secret_access_key, session_token = "ASIATEST", "secret", "token"

    monkeypatch.setattr("backups.replicas.read_only_credentials", lambda team, *, actor: Issued())


def kinds(team) -> list[str]:
    return list(TeamEvent.objects.filter(team=team, kind__startswith="restore:").order_by("pk").values_list(
        "kind", flat=True))


def test_a_run_takes_a_restore_to_its_preview_and_waits_there(requested, backend):
    restore = run_restore(requested, actor="test")
    assert restore.state == Restore.State.PREVIEW_RUNNING
    assert (restore.volume, restore.preview_url) == (f"vol-restore-{restore.pk}",
                                                     f"http://preview-{restore.pk}.internal:8080/")
    assert [call[0] for call in backend.calls] == ["create_restore_volume", "restore_into_volume", "start_preview"]
    assert backend.calls[1][2] == "0000000000000007"  # exactly the pinned transaction
    assert backend.calls[2][2] == preview_secret(restore)
    assert run_restore(restore, actor="test").state == Restore.State.PREVIEW_RUNNING
    # Waiting for a person: a run only makes sure the preview still runs (idempotent), nothing else.
    assert [call[0] for call in backend.calls[3:]] == ["start_preview"]
    assert kinds(restore.team) == ["restore:preview"]


def test_a_stopped_preview_is_started_again_by_the_tend_and_stopped_with_the_control_plane(requested, backend):
    restore = run_restore(requested, actor="test")
    assert stop_previews(BACKEND) == 1 and backend.calls[-1] == ("stop_preview", restore.pk)
    backend.failures["start_preview"] = BackendError("the preview exited: no database")
    [restore] = tend_restores(actor="test")
    assert (restore.state, restore.message) == (Restore.State.PREVIEW_RUNNING,
                                                "the preview is not running: the preview exited: no database")
    [restore] = tend_restores(actor="test")
    assert (restore.state, restore.message) == (Restore.State.PREVIEW_RUNNING, "")
    assert backend.calls[-1] == ("start_preview", restore.pk, preview_secret(restore))


def test_the_preview_secret_is_the_restores_own_and_not_stored(requested, make_team):
    other = Restore.objects.create(team=requested.team, database="data.db", target_txid=7,
                                   target_time=datetime.now(UTC), requested_by="test")
    assert preview_secret(requested) != preview_secret(other)
    assert len(preview_secret(requested)) == 64
    stored = Restore.objects.filter(pk=requested.pk).values()[0]
    assert preview_secret(requested) not in repr(stored)


def test_confirmed_it_swaps_in_and_back_holding_the_instance(requested, backend):
    restore = run_restore(requested, actor="test")
    restore = confirm_swap(restore, actor="alice")
    assert restore.state == Restore.State.SWAPPING and queued_runs() == [[restore.pk, "alice"]]
    instance = restore.team.instance
    owner = claim(instance)  # a provisioning run holds the instance: the swap waits for it
    restore = run_restore(restore, actor="alice")
    assert restore.state == Restore.State.SWAPPING and "will retry" in restore.message
    assert "swap_in_restore" not in [call[0] for call in backend.calls]
    release(instance, owner)
    restore = run_restore(restore, actor="alice")
    assert (restore.state, restore.message, restore.preview_url) == (Restore.State.SWAPPED, "", "")
    assert restore.swapped_at is not None
    instance.refresh_from_db()
    assert instance.resources["volume"] == f"vol-restore-{restore.pk}"
    assert instance.claimed_by == ""  # the swap gave the instance back
    assert confirm_swap(restore, actor="alice").state == Restore.State.SWAPPED  # idempotent
    restore = run_restore(request_swap_back(restore, actor="alice"), actor="alice")
    assert restore.state == Restore.State.SWAPPED_BACK
    instance.refresh_from_db()
    assert instance.resources["volume"] == "vol-live"
    assert [call[0] for call in backend.calls].count("swap_in_restore") == 1
    assert kinds(restore.team) == ["restore:preview", "restore:swapped", "restore:swapped_back"]


def test_a_failure_before_the_swap_ends_the_restore_and_its_volume_goes(requested, backend):
    backend.failures["restore_into_volume"] = BackendError("litestream restore of data.db failed: checksum")
    restore = run_restore(requested, actor="test")
    assert (restore.state, restore.message) == (Restore.State.FAILED,
                                                "litestream restore of data.db failed: checksum")
    assert kinds(restore.team) == ["restore:failed"]
    assert restore.volumes_deleted_at is not None  # the same run cleaned up
    assert ("delete_restore_volumes", restore.pk) in backend.calls and ("stop_preview", restore.pk) in backend.calls
    assert tend_restores(actor="test") == []


def test_a_failed_cleanup_is_retried_by_the_tend(requested, backend):
    backend.failures["create_restore_volume"] = BackendError("no capacity in the region")
    backend.failures["delete_restore_volumes"] = BackendUnavailable("Fly answered 503")
    restore = run_restore(requested, actor="test")
    assert (restore.state, restore.volumes_deleted_at) == (Restore.State.FAILED, None)
    assert restore.message == "no capacity in the region"  # the failure's reason, not the cleanup's
    [restore] = tend_restores(actor="test")
    assert restore.volumes_deleted_at is not None


def test_a_busy_platform_is_retried_by_the_tend_not_failed(requested, backend):
    backend.failures["create_restore_volume"] = BackendUnavailable("Fly answered 503")
    restore = run_restore(requested, actor="test")
    assert (restore.state, restore.message) == (Restore.State.REQUESTED, "will retry: Fly answered 503")
    [restore] = tend_restores(actor="test")
    assert (restore.state, restore.message) == (Restore.State.PREVIEW_RUNNING, "")


def test_a_failed_swap_is_never_abandoned(requested, backend):
    restore = confirm_swap(run_restore(requested, actor="test"), actor="test")
    backend.failures["swap_in_restore"] = BackendError("the instance did not become healthy")
    restore = run_restore(restore, actor="test")
    assert (restore.state, restore.message) == (Restore.State.SWAPPING,
                                                "will retry: the instance did not become healthy")
    with pytest.raises(RestoreRefused, match="cannot be cancelled"):
        cancel_restore(restore, actor="test")
    [restore] = tend_restores(actor="test")
    assert restore.state == Restore.State.SWAPPED


def test_one_run_at_a_time(requested, backend):
    owner, _ = claim_row(Restore.objects.filter(pk=requested.pk), timedelta(minutes=5))
    assert owner is not None
    assert advance_restore(requested, actor="test").state == Restore.State.REQUESTED
    assert backend.calls == []


def test_the_replaced_volume_is_kept_for_the_keep_period_then_deleted(requested, backend, settings):
    settings.RESTORE_KEEP_DAYS = 7
    restore = run_restore(confirm_swap(run_restore(requested, actor="test"), actor="test"), actor="test")
    assert tend_restores(actor="test", now=timezone.now() + timedelta(days=6)) == []
    Restore.objects.filter(pk=restore.pk).update(swapped_at=timezone.now() - timedelta(days=8))
    [restore] = tend_restores(actor="test")
    assert restore.state == Restore.State.SWAPPED and restore.volumes_deleted_at is not None
    assert backend.calls[-1] == ("delete_restore_volumes", restore.pk)
    with pytest.raises(RestoreRefused, match="was deleted on"):
        request_swap_back(restore, actor="test")


def test_what_is_refused(requested, backend, django_user_model):
    from backups.restore_requests import request_restore

    with pytest.raises(RestoreRefused, match="finish or cancel it first"):
        request_restore(requested.team, database="data.db", actor="test")
    with pytest.raises(RestoreRefused, match="only a running preview"):
        confirm_swap(requested, actor="test")
    with pytest.raises(RestoreRefused, match="only a swapped-in restore"):
        request_swap_back(requested, actor="test")
    operator = django_user_model.objects.create_user("operator", is_staff=True)
    for change in (confirm_swap, request_swap_back, cancel_restore):
        with pytest.raises(PermissionDenied):
            change(requested, actor=operator)
    first = run_restore(confirm_swap(run_restore(requested, actor="test"), actor="test"), actor="test")
    second = Restore.objects.create(team=first.team, database="data.db", target_txid=9,
                                    target_time=datetime.now(UTC), requested_by="test")
    second = run_restore(confirm_swap(run_restore(second, actor="test"), actor="test"), actor="test")
    assert second.state == Restore.State.SWAPPED
    with pytest.raises(RestoreRefused, match="a later restore was swapped in"):
        request_swap_back(first, actor="test")
    assert cancel_restore(Restore.objects.create(team=first.team, database="data.db", target_txid=9,
                                                 target_time=datetime.now(UTC), requested_by="test"),
                          actor="test").state == Restore.State.CANCELLED


def test_the_command_swaps_and_swaps_back_by_id(requested, backend, capsys):
    restore = run_restore(requested, actor="test")
    call_command("restore", restore.team.slug, "--swap", str(restore.pk))
    assert "swapped in; the replaced volume is kept 7 days" in capsys.readouterr().out
    call_command("restore", restore.team.slug, "--swap-back", str(restore.pk))
    assert "swapped back" in capsys.readouterr().out
    with pytest.raises(Exception, match=f"has no restore {restore.pk + 100}"):
        call_command("restore", restore.team.slug, "--cancel", str(restore.pk + 100))


def test_the_worker_runs_what_a_request_queued(transactional_db, requested, backend):
    restore = run_restore(requested, actor="test")
    DBTaskResult.objects.all().delete()  # the team's provisioning, queued when it was made
    confirm_swap(restore, actor="alice")
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--max-tasks", "1", verbosity=0)
    restore.refresh_from_db()
    assert restore.state == Restore.State.SWAPPED
    assert DBTaskResult.objects.get(task_path="backups.tasks.run_restore_task").return_value == "swapped"
