"""Restore drills against the real Litestream replicating to the local S3 (SeaweedFS): a healthy team's drill
passes with the restored database's fingerprint; deleting or corrupting one replica object fails that team's
next drill (and alerts once per episode) while another team's keeps passing."""

import tempfile
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups import drills
from backups.drills import drill_team
from backups.models import RestoreDrill
from backups.replicas import replica_window
from teams.models import TeamEvent

from .test_litestream import (
    admin_s3, create_wal_database, credentials_from_endpoint, delete_prefix, litestream, litestream_env,
    write_config,
)


def sync(team, s3_env, client, db: Path) -> None:
    """One Litestream sync of the team's live `db` to its replica, with the team's own credentials."""
    config = write_config(db.parent / "litestream.yml", db, s3_env, f"{team.storage_prefix}data.db")
    synced = litestream("replicate", "-once", "-config", config,
                        env=litestream_env(credentials_from_endpoint(client, team)))
    assert synced.returncode == 0, synced.stderr


def replicate(team, s3_env, client, folder: Path, rows: range) -> None:
    create_wal_database(folder / "data.db", rows)
    sync(team, s3_env, client, folder / "data.db")


@pytest.fixture
def two_teams(s3_env, make_team, client, tmp_path):
    teams = [make_team(), make_team()]
    admin = admin_s3(s3_env)
    for number, team in enumerate(teams):
        delete_prefix(admin, s3_env.bucket, f"{team.storage_prefix}data.db/")
        (tmp_path / str(number)).mkdir()
        replicate(team, s3_env, client, tmp_path / str(number), range(1, 11 + 10 * number))
    yield teams, admin
    for team in teams:
        delete_prefix(admin, s3_env.bucket, f"{team.storage_prefix}data.db/")


def replica_keys(admin, bucket: str, team) -> list[str]:
    listed = admin.list_objects_v2(Bucket=bucket, Prefix=f"{team.storage_prefix}data.db/")
    return sorted(item["Key"] for item in listed.get("Contents", []) if item["Key"].endswith(".ltx"))


def test_a_healthy_team_passes_with_its_fingerprint(two_teams, monkeypatch):
    (team, _other), _admin = two_teams
    scratch_dirs = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(drills.tempfile, "mkdtemp", lambda **kw: scratch_dirs.append(real_mkdtemp(**kw))
                        or scratch_dirs[-1])
    drill = drill_team(team, actor="test")
    assert drill.status == RestoreDrill.Status.SUCCEEDED, drill.message
    assert drill.passed and not drill.alerted
    assert drill.fingerprint["tables"] == {"notes": 10} and len(drill.fingerprint["sha256"]) == 64
    assert int(drill.restored_txid, 16) == replica_window(team, "data.db", actor="test").newest.txid
    assert 0 < drill.restore_seconds < drill.duration_seconds  # the restore, then the check and fingerprint
    assert scratch_dirs and not Path(scratch_dirs[0]).exists()  # the sandbox is always removed
    assert RestoreDrill.objects.get(pk=drill.pk).fingerprint == drill.fingerprint


def test_the_credentials_are_in_litestreams_environment_only(two_teams, monkeypatch):
    (team, _other), _admin = two_teams
    seen = {}
    real_run = drills.subprocess.run

    def spy(command, **kwargs):
        seen["config"] = Path(kwargs["cwd"], "litestream.yml").read_text()
        seen["command"], seen["env"] = command, kwargs["env"]
        return real_run(command, **kwargs)

    monkeypatch.setenv("AWS_CA_BUNDLE", "/nonexistent/bundle.pem")
    monkeypatch.setattr(drills.subprocess, "run", spy)
    assert drill_team(team, actor="test").passed
    secret = seen["env"]["AWS_SECRET_ACCESS_KEY"]
    assert secret and secret not in seen["config"] and secret not in " ".join(seen["command"])
    assert "AWS_CA_BUNDLE" not in seen["env"]  # plain http endpoint: it would break Litestream


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_damaged_replica_fails_that_teams_drill_only(two_teams, s3_env, damage, caplog):
    (team, other), admin = two_teams
    assert drill_team(team, actor="test").passed and drill_team(other, actor="test").passed
    key = replica_keys(admin, s3_env.bucket, team)[-1]
    if damage == "delete":
        admin.delete_object(Bucket=s3_env.bucket, Key=key)
    else:
        body = bytearray(admin.get_object(Bucket=s3_env.bucket, Key=key)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        admin.put_object(Bucket=s3_env.bucket, Key=key, Body=bytes(body))
    failed = drill_team(team, actor="test")
    assert failed.status == RestoreDrill.Status.FAILED and not failed.passed
    assert failed.alerted and "ALERT: restore drill failed" in caplog.text
    again = drill_team(team, actor="test")
    assert not again.passed and not again.alerted  # once per episode
    assert drill_team(other, actor="test").passed
    alerts = TeamEvent.objects.filter(kind=TeamEvent.Kind.RESTORE_DRILL_FAILED, is_error=True)
    assert [event.team for event in alerts] == [team]


def test_the_command_reports_and_fails_clearly(two_teams):
    (team, _other), _admin = two_teams
    output = StringIO()
    call_command("drill", team.slug, stdout=output)
    assert f"{team.slug}: succeeded in " in output.getvalue()
    for args, message in [(("no-such-team",), "no team"), ((), "name a team or --due"),
                          ((team.slug, "--due"), "name a team or --due")]:
        with pytest.raises(CommandError, match=message):
            call_command("drill", *args, stdout=StringIO())


def test_the_drill_records_the_restored_points_time_and_lag(two_teams):
    (team, _other), _admin = two_teams
    drill = drill_team(team, actor="test")
    newest = replica_window(team, "data.db", actor="test").newest
    assert drill.restored_point_at is not None
    assert abs((drill.restored_point_at - newest.time).total_seconds()) < 1


def test_a_restored_copy_that_fails_its_integrity_check_fails_the_drill(tmp_path):
    """Drills run SQLite's full integrity check themselves, beside the fingerprint (Litestream's is off for them)."""
    import sqlite3

    from backups.drills import DrillFailed, checked_fingerprint

    path = tmp_path / "restored.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute("CREATE INDEX notes_body ON notes (body)")
        db.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {n:05}",) for n in range(2000)])
    assert checked_fingerprint(path, deadline=time.monotonic() + 60)["tables"] == {"notes": 2000}
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    last_page = len(data) - page_size  # an index leaf: the rows still read, the index no longer matches them
    data[last_page + 200:last_page + 400] = bytes(200)
    path.write_bytes(bytes(data))
    with pytest.raises((DrillFailed, sqlite3.DatabaseError)):
        checked_fingerprint(path, deadline=time.monotonic() + 60)


def test_the_checks_after_a_restore_stop_at_the_drills_deadline(tmp_path):
    """A restored copy slow to read (a hostile team's, crafted so) holds the worker no longer than the drill's
    timeout: both the integrity check and the fingerprint are interrupted by SQLite once the deadline passed."""
    import sqlite3

    from backups.drills import DrillTimedOut, checked_fingerprint, database_fingerprint

    path = tmp_path / "restored.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {n:05}",) for n in range(20_000)])
    assert checked_fingerprint(path, deadline=time.monotonic() + 60)["tables"] == {"notes": 20_000}
    with pytest.raises(DrillTimedOut):
        checked_fingerprint(path, deadline=time.monotonic())
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        database_fingerprint(path, deadline=time.monotonic())


def test_a_drill_past_its_timeout_is_recorded_timed_out_and_alerts(two_teams, settings, monkeypatch):
    (team, _other), _admin = two_teams
    settings.DRILL_TIMEOUT = 0.001  # gone before the restore starts: Litestream gets no time at all
    drill = drill_team(team, actor="test")
    assert drill.status == RestoreDrill.Status.TIMED_OUT and drill.alerted, drill.message
    assert drill.message == "no restore and check within 0.001s" and drill.restore_seconds is None
    settings.DRILL_TIMEOUT = 300

    def checks_past_the_deadline(path, *, deadline):
        raise drills.DrillTimedOut

    monkeypatch.setattr(drills, "checked_fingerprint", checks_past_the_deadline)
    drill = drill_team(team, actor="test")
    assert drill.status == RestoreDrill.Status.TIMED_OUT and drill.restore_seconds is not None
    assert not drill.alerted  # the same episode


def test_a_restore_the_scratch_disk_cannot_hold_fails_before_litestream_runs(two_teams, monkeypatch):
    """A team's replica (its hostile instance writes it) never fills the worker's disk: a restore needing more than
    the scratch file system has, less its headroom, is refused with the sizes before Litestream runs; one byte more
    free and it runs."""
    (team, _other), _admin = two_teams
    window = replica_window(team, "data.db", actor="test")
    plan = drills.plan_for_txid(window, window.newest.txid)
    needed = plan.database_bytes + plan.download_bytes
    real_disk_usage, spare = drills.shutil.disk_usage, [-1]

    def a_nearly_full_disk(path):
        usage = real_disk_usage(path)
        return usage._replace(free=int(usage.total * drills.SCRATCH_HEADROOM) + needed + spare[0])

    monkeypatch.setattr(drills.shutil, "disk_usage", a_nearly_full_disk)
    ran = []
    real_restore = drills.restore_replica
    monkeypatch.setattr(drills, "restore_replica", lambda *args, **kwargs: ran.append(1) or real_restore(
        *args, **kwargs))
    drill = drill_team(team, actor="test")
    assert drill.status == RestoreDrill.Status.FAILED and ran == []
    assert f"the restore needs {needed:,} bytes of scratch space" in drill.message
    spare[0] = 1
    assert drill_team(team, actor="test").passed and ran == [1]
