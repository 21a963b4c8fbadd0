"""Point-in-time restore end to end on the embedded default (issue 16's first acceptance point): a team on the
local backend with a real instance (Datasette + Litestream) backing up to the enforcing local S3; rows written at
t1, t2 and t3; a restore to a time between t1 and t2 lands exactly t1's rows in a new volume, the preview serves
them (to the control plane's secret only), the swap makes them live and replicated, swapping back brings t3's
rows back, and the kept volume is deleted after the keep period. Each step is the worker's
(`backups.restore.run_restore`), as the requests queue it."""

import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone

from backups.models import Restore
from backups.preview import preview_tables
from backups.restore import preview_secret, run_restore, tend_restores
from backups.restore_requests import confirm_swap, request_restore, request_swap_back
from backups.window import OutsideWindow
from instances.models import Instance
from instances.provisioning import instance_for
from instances.services import create_team_and_provision

from .test_instance import count_rows, needs_instance_venv, restored_copy, wait_for, wipe_prefix, admin_client
from .test_local_backend import local, query, run_worker  # noqa: F401  (the fixture: the local backend)

pytestmark = [needs_instance_venv, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def team_processes_by_group() -> dict[int, int]:
    """pid -> process group of every live process (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    found[int(entry.name)] = int(fields[2])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def write_batch(instance, batch: range) -> None:
    with sqlite3.connect(Path(instance.resources["volume"]) / "data.db", timeout=30) as db:
        db.execute("create table if not exists notes (id integer primary key, body text)")
        db.executemany("insert into notes (id, body) values (?, ?)", [(n, f"note {n}") for n in batch])


def live_ids(instance) -> list[int]:
    return [row["id"] for row in query(instance, "select id from notes order by id")]


def test_restore_between_t1_and_t2_preview_swap_and_swap_back(local, s3_env, tmp_path, settings):  # noqa: F811
    team = create_team_and_provision("pitr")
    wipe_prefix(admin_client(s3_env), s3_env.bucket, team.storage_prefix)
    run_worker()
    instance = instance_for(team)
    assert instance.state == Instance.State.RUNNING
    backed_up = tmp_path / "backed-up.db"
    synced_after = []
    for batch in (range(1, 11), range(11, 21), range(21, 31)):
        if synced_after:
            time.sleep(1.5)  # apart from the previous batch's sync, so a time between them exists
        write_batch(instance, batch)
        wait_for(lambda: count_rows(restored_copy(s3_env, team, "data.db", backed_up), "notes") == batch.stop - 1,
                 timeout=60, interval=0.5, message=f"rows up to {batch.stop - 1} in the backup")
        synced_after.append(timezone.now())
    t1_synced = synced_after[0]

    with pytest.raises(OutsideWindow) as refused:
        request_restore(team, database="data.db", timestamp=t1_synced - timedelta(hours=2), actor="test")
    [oldest] = refused.value.nearest  # before the window: its oldest point is the nearest
    assert oldest.time < synced_after[0]

    restore = request_restore(team, database="data.db", timestamp=t1_synced + timedelta(milliseconds=500),
                              actor="test")
    restore = run_restore(restore, actor="test")
    assert restore.state == Restore.State.PREVIEW_RUNNING, restore.message
    # The new volume holds exactly t1's rows; the live one is untouched and still serves t3's.
    assert [row[0] for row in sqlite3.connect(Path(restore.volume) / "data.db").execute(
        "select id from notes order by id")] == list(range(1, 11))
    instance.refresh_from_db()
    assert live_ids(instance) == list(range(1, 31))
    # The preview serves it, to the control plane's secret only.
    [notes] = preview_tables(restore)
    assert (notes.name, notes.count) == ("notes", 10)
    assert [row[0] for row in notes.rows] == [str(n) for n in range(1, 11)]
    for headers in ({}, {"X-Cloudctl-Preview": "wrong"}, {"X-Cloudctl-Preview": preview_secret(restore)[:-1]}):
        assert httpx.get(f"{restore.preview_url}data.json", headers=headers, timeout=5).status_code == 403
    secret = preview_secret(restore)
    assert secret not in (Path(restore.volume).parent / "preview.log").read_text()
    # The preview holds nothing to write the team's backups with: no token, no credentials.
    preview_group = int((Path(restore.volume).parent / "preview.pid").read_text())
    preview_processes = [pid for pid, group in team_processes_by_group().items() if group == preview_group]
    assert preview_processes
    for pid in preview_processes:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"CLOUDCTL_TOKEN=" not in environ and b"AWS_SECRET_ACCESS_KEY=" not in environ

    restore = run_restore(confirm_swap(restore, actor="test"), actor="test")
    assert restore.state == Restore.State.SWAPPED, restore.message
    instance.refresh_from_db()
    assert live_ids(instance) == list(range(1, 11))
    # The swapped-in database is backed up on top of the replica's history: a row written now is in the backup.
    write_batch(instance, range(100, 101))
    wait_for(lambda: sorted(row[0] for row in sqlite3.connect(restored_copy(s3_env, team, "data.db", backed_up))
                            .execute("select id from notes")) == [*range(1, 11), 100],
             timeout=60, interval=0.5, message="the swapped-in state and the new row in the backup")

    restore = run_restore(request_swap_back(restore, actor="test"), actor="test")
    assert restore.state == Restore.State.SWAPPED_BACK, restore.message
    instance.refresh_from_db()
    assert live_ids(instance) == list(range(1, 31))
    restore_dir = Path(instance.resources["volume"]).parent / "restores" / str(restore.pk)
    assert (restore_dir / "replaced" / "data.db").exists()  # the swapped-in volume, kept

    settings.RESTORE_KEEP_DAYS = 0
    Restore.objects.filter(pk=restore.pk).update(swapped_back_at=timezone.now() - timedelta(seconds=1))
    [restore] = tend_restores(actor="test")
    assert restore.volumes_deleted_at is not None and not restore_dir.exists()
    assert live_ids(instance) == list(range(1, 31))
