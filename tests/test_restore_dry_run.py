"""`manage.py restore --dry-run` against the real Litestream replicating to the local S3 (SeaweedFS): rows written at
t1, t2 and t3 with a sync after each, the window read with the control plane's read-only credentials, and what a
dry run names checked against what Litestream itself restores (with those same read-only credentials)."""

import json
import struct
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from backups.models import Restore
from backups.preview import PREVIEW_HEADER
from backups.restore import preview_secret
from backups.replicas import replica_window
from credentials.models import CredentialEvent
from credentials.services import mint_read_only_credentials
from instances.models import Instance

from .test_litestream import (
    REGION, admin_s3, all_rows, create_wal_database, credentials_from_endpoint, delete_prefix, insert_rows, integrity,
    litestream, litestream_env, write_config,
)

# A transaction's time is its LTX file's, written at the sync: keep the writes this far apart.
APART_SECONDS = 1.1


def dry_run(*args) -> str:
    output = StringIO()
    call_command("restore", *args, "--dry-run", stdout=output)
    return output.getvalue()


def restored_txid(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith("would restore: ")]
    return line.removeprefix("would restore: txid ").split()[0]


@pytest.fixture
def replicated(s3_env, make_team, client, tmp_path):
    """A team's data.db replicated at t1, t2 and t3 (rows 1-10, 11-20, 21-30), one `replicate -once` after each."""
    team = make_team()
    path = f"{team.storage_prefix}data.db"
    admin = admin_s3(s3_env)
    delete_prefix(admin, s3_env.bucket, f"{path}/")
    db = tmp_path / "data.db"
    config = write_config(tmp_path / "litestream.yml", db, s3_env, path)
    env = litestream_env(credentials_from_endpoint(client, team))
    written_at, synced_at = [], []
    for rows in (range(1, 11), range(11, 21), range(21, 31)):
        time.sleep(APART_SECONDS if written_at else 0)
        written_at.append(datetime.now(UTC))
        if rows.start == 1:
            create_wal_database(db, rows)
        else:
            insert_rows(db, rows)
        synced = litestream("replicate", "-once", "-config", config, env=env)
        assert synced.returncode == 0, synced.stderr
        synced_at.append(datetime.now(UTC))
    # A time that restores t1's state: after t1's sync ended (t1's point is older), before t2's rows (t2's point is
    # newer). Halfway between t1 and t2 is not, when the sync takes longer than that (a loaded CI run).
    between = synced_at[0] + (written_at[1] - synced_at[0]) / 2
    yield {"team": team, "db": db, "config": config, "written_at": written_at, "between": between, "tmp": tmp_path}
    delete_prefix(admin, s3_env.bucket, f"{path}/")


def litestream_restore(replicated, *args) -> tuple[dict, list]:
    """Litestream's own restore with the control plane's read-only credentials: its JSON summary and the rows."""
    issued = mint_read_only_credentials(replicated["team"], actor="test")
    env = litestream_env({"access-key-id": issued.access_key_id, "secret-access-key": issued.secret_access_key,
                          "session-token": issued.session_token})
    output = replicated["tmp"] / f"restored-{len(list(replicated['tmp'].glob('restored-*')))}.db"
    result = litestream("restore", "-config", replicated["config"], "-json", "-o", output, *args, replicated["db"],
                        env=env)
    assert result.returncode == 0, result.stderr
    assert integrity(output) == "ok"
    return json.loads(result.stdout[result.stdout.index("{"):]), all_rows(output)  # after any log lines


def test_a_time_between_t1_and_t2_names_t1s_state(replicated):
    t2 = replicated["written_at"][1]
    window = replica_window(replicated["team"], "data.db", actor="test")
    output = dry_run(replicated["team"].slug, "--timestamp", t2.isoformat())
    txid = restored_txid(output)
    [t1_point] = [point for point in window.points if point.txid_hex == txid]
    assert replicated["written_at"][0] < t1_point.time < t2
    assert f"txid {txid} at {t1_point.time.isoformat(timespec='milliseconds')}" in output
    summary, rows = litestream_restore(replicated, "-timestamp", t2.isoformat().replace("+00:00", "Z"))
    assert int(summary["txid"], 16) == int(txid, 16)  # what Litestream itself restores at that time
    assert rows == [(n, f"note {n} " + "x" * (n % 97)) for n in range(1, 11)]
    assert "dry run: nothing was changed" in output


def test_the_window_spans_t1_to_t3_and_latest_is_what_litestream_restores(replicated):
    window = replica_window(replicated["team"], "data.db", actor="test")
    t1, t2, t3 = replicated["written_at"]
    assert window.oldest.time < t2 and t3 < window.newest.time
    output = dry_run(replicated["team"].slug, "--latest")
    assert restored_txid(output) == window.newest.txid_hex
    assert f"restorable window: txid {window.oldest.txid_hex}" in output
    assert "level 0:" in output
    summary, rows = litestream_restore(replicated)
    assert int(summary["txid"], 16) == window.newest.txid
    assert len(rows) == 30
    by_txid = dry_run(replicated["team"].slug, "--txid", window.newest.txid_hex)
    assert restored_txid(by_txid) == window.newest.txid_hex


def test_points_outside_the_window_are_refused_with_the_nearest(replicated):
    slug = replicated["team"].slug
    window = replica_window(replicated["team"], "data.db", actor="test")
    before = (replicated["written_at"][0] - timedelta(hours=1)).isoformat()
    with pytest.raises(CommandError, match=f"refused: .*Nearest restorable: txid {window.oldest.txid_hex}"):
        dry_run(slug, "--timestamp", before)
    after = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    with pytest.raises(CommandError, match=f"after the newest.*Nearest restorable: txid {window.newest.txid_hex}"):
        dry_run(slug, "--timestamp", after)
    with pytest.raises(CommandError, match=f"not a restorable point.*txid {window.newest.txid_hex}"):
        dry_run(slug, "--txid", format(window.newest.txid + 1, "x"))


def test_restoring_a_team_without_an_instance_is_refused_and_changes_nothing(replicated):
    audit_rows = CredentialEvent.objects.count()
    with pytest.raises(CommandError, match="has no instance"):
        call_command("restore", replicated["team"].slug, "--latest")
    assert CredentialEvent.objects.count() == audit_rows  # not even a read of the replica
    assert not Restore.objects.exists()


def test_restoring_writes_a_new_volume_starts_its_preview_and_cancelling_removes_both(replicated, s3_env, settings):
    settings.LOCAL_INSTANCES_DIR = str(replicated["tmp"] / "instances")
    settings.INSTANCE_S3_ENDPOINT, settings.INSTANCE_S3_REGION = s3_env.endpoint_url, REGION
    Instance.objects.create(team=replicated["team"], backend="instances.backends.local.LocalBackend")
    output = StringIO()
    call_command("restore", replicated["team"].slug, "--latest", stdout=output)
    [restore] = Restore.objects.all()
    assert restore.state == Restore.State.PREVIEW_RUNNING, restore.message
    volume = Path(restore.volume)
    assert len(all_rows(volume / "data.db")) == 30
    assert ": requested (restore id" in output.getvalue()
    assert f"manage.py restore {restore.team.slug} --swap {restore.pk}" in output.getvalue()
    preview = httpx.get(f"{restore.preview_url}-/versions.json", headers={PREVIEW_HEADER: preview_secret(restore)},
                        timeout=5)
    assert preview.status_code == 200
    call_command("restore", replicated["team"].slug, "--cancel", str(restore.pk), stdout=output)
    restore.refresh_from_db()
    assert restore.state == Restore.State.CANCELLED and restore.volumes_deleted_at is not None
    assert not volume.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(preview.url, timeout=5)


@pytest.mark.parametrize(("header", "message"), [
    (b"not an LTX file at all", "not the LTX file its name says"),
    (struct.pack(">4sIIIQQq", b"LTX1", 0, 4096, 1, 7, 7, 0), "not the LTX file its name says"),  # other txids
    (struct.pack(">4sIIIQQq", b"LTX1", 0, 4096, 1, 1, 1, 2**62), "no possible time"),
])
def test_a_damaged_replica_is_a_clear_error(s3_env, make_team, header, message):
    """The team writes its own replica: whatever it put there is refused by name, never a traceback."""
    team = make_team()
    key = f"{team.storage_prefix}data.db/0000/{'1'.zfill(16)}-{'1'.zfill(16)}.ltx"
    admin = admin_s3(s3_env)
    admin.put_object(Bucket=s3_env.bucket, Key=key, Body=header.ljust(100, b"\0"))
    try:
        with pytest.raises(CommandError, match=message):
            dry_run(team.slug, "--latest")
    finally:
        admin.delete_object(Bucket=s3_env.bucket, Key=key)


def test_the_team_backups_page_shows_the_window_and_a_planned_point(replicated, staff_client):
    team, t2 = replicated["team"], replicated["written_at"][1]
    url = reverse("dashboard:team_backups", args=[team.slug])
    assert url in staff_client.get(reverse("dashboard:team", args=[team.slug])).content.decode()
    window = replica_window(team, "data.db", actor="test")
    page = staff_client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert window.oldest.txid_hex in text and window.newest.txid_hex in text and 'id="levels"' in text
    planned = staff_client.get(url, {"timestamp": t2.isoformat()})
    [t1_point] = [point for point in window.points if replicated["written_at"][0] < point.time < t2]
    assert planned.status_code == 200
    assert f"txid <code>{t1_point.txid_hex}</code>" in planned.content.decode().split('id="plan"')[1]
    # Minted as the staff user, on the team's timeline.
    assert CredentialEvent.objects.filter(team=team, kind=CredentialEvent.Kind.READ_ONLY, actor="operator").exists()
    refused = staff_client.get(url, {"timestamp": (t2 - timedelta(hours=1)).isoformat()})
    assert refused.status_code == 400
    assert f"Nearest restorable:\n    txid <code>{window.oldest.txid_hex}</code>" in refused.content.decode()
    for bad in ({"timestamp": "soon"}, {"txid": "xyz"}, {"database": "../x.db"},
                {"timestamp": t2.isoformat(), "txid": "1"}):
        assert staff_client.get(url, bad).status_code == 400, bad


def test_bad_requests_are_clear_errors(replicated, db):
    slug = replicated["team"].slug
    for args, message in [(("no-such-team", "--latest"), "no team"),
                          ((slug, "--timestamp", "2026-11-26T17:40:00"), "no time zone"),
                          ((slug, "--timestamp", "yesterday"), "not an ISO 8601 time"),
                          ((slug, "--txid", "zz"), "not a transaction id"),
                          ((slug, "--latest", "--database", "../etc.db"), "not a database name"),
                          ((slug, "--latest", "--database", "other.db"), "no restorable point")]:
        with pytest.raises(CommandError, match=message):
            dry_run(*args)
