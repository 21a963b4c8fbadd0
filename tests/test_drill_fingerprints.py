"""The fingerprint an instance reports for a txid Litestream synced (instance/fingerprint.py, through the private
API with the team's signed signal value) and the drill that restores exactly that txid and compares: equal on a
healthy team, a failed drill (alerted once) when they differ, and a report under another team's value refused."""

import importlib.util
import json
from pathlib import Path

import pytest

from backups.drills import drill_team
from backups.models import ReportedFingerprint, RestoreDrill
from backups.replicas import replica_window
from teams.models import TeamEvent
from teams.tokens import signal_value

from .test_litestream import admin_s3, delete_prefix, insert_rows
from .test_restore_drills import replicate, sync

spec = importlib.util.spec_from_file_location(
    "instance_fingerprint", Path(__file__).resolve().parent.parent / "instance" / "fingerprint.py")
instance_fingerprint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(instance_fingerprint)


@pytest.fixture
def live(s3_env, make_team, client, tmp_path):
    """Two teams whose live data.db Litestream replicated; each team's database path."""
    teams = [make_team(), make_team()]
    admin = admin_s3(s3_env)
    databases = []
    for number, team in enumerate(teams):
        delete_prefix(admin, s3_env.bucket, f"{team.storage_prefix}data.db/")
        (tmp_path / str(number)).mkdir()
        replicate(team, s3_env, client, tmp_path / str(number), range(1, 11 + 10 * number))
        databases.append(tmp_path / str(number) / "data.db")
    yield list(zip(teams, databases))
    for team in teams:
        delete_prefix(admin, s3_env.bucket, f"{team.storage_prefix}data.db/")


def report(client, team, body: dict, *, value: str | None = None):
    return client.post(f"/private/v1/teams/{team.pk}/signals/fingerprint/{value or signal_value(team)}",
                       data=json.dumps(body), content_type="application/json")


def synced_report(db: Path) -> dict:
    taken = instance_fingerprint.fingerprint_at_synced_txid(db)
    assert taken is not None, "Litestream has synced every write: the fingerprint is taken"
    txid, fingerprint = taken
    return {"database": "data.db", "txid": txid, "fingerprint": fingerprint}


def test_a_healthy_team_restores_the_reported_txid_and_matches(live, s3_env, client):
    (team, db), _other = live
    reported = synced_report(db)
    assert report(client, team, reported).status_code == 200
    insert_rows(db, range(100, 110))  # the replica moves on: the drill still restores the reported txid
    sync(team, s3_env, client, db)
    assert replica_window(team, "data.db", actor="test").newest.txid > reported["txid"]
    drill = drill_team(team, actor="test")
    assert drill.passed and drill.fingerprint_matched is True, drill.message
    assert int(drill.restored_txid, 16) == reported["txid"]
    assert drill.fingerprint == reported["fingerprint"] and drill.fingerprint["tables"] == {"notes": 10}


def test_without_a_report_the_newest_is_restored_and_nothing_compared(live):
    (team, _db), _other = live
    drill = drill_team(team, actor="test")
    assert drill.passed and drill.fingerprint_matched is None
    assert int(drill.restored_txid, 16) == replica_window(team, "data.db", actor="test").newest.txid


def test_a_different_fingerprint_fails_the_drill_and_alerts_once(live, client):
    (team, db), (other, other_db) = live
    reported = synced_report(db)
    reported["fingerprint"] = {**reported["fingerprint"], "sha256": "0" * 64}
    assert report(client, team, reported).status_code == 200
    assert report(client, other, synced_report(other_db)).status_code == 200
    failed = drill_team(team, actor="test")
    assert failed.status == RestoreDrill.Status.FAILED and failed.fingerprint_matched is False
    assert failed.alerted and "differs from what the instance reported" in failed.message
    again = drill_team(team, actor="test")
    assert not again.passed and not again.alerted
    assert drill_team(other, actor="test").fingerprint_matched is True
    alerts = TeamEvent.objects.filter(kind=TeamEvent.Kind.RESTORE_DRILL_FAILED, is_error=True)
    assert [event.team for event in alerts] == [team]


def test_a_report_under_another_teams_value_is_refused(live, client):
    (team, db), (other, _other_db) = live
    answer = report(client, team, synced_report(db), value=signal_value(other))
    assert answer.status_code == 403
    assert not ReportedFingerprint.objects.exists()


@pytest.mark.parametrize("body", [
    {}, {"database": "../x.db", "txid": 1, "fingerprint": {"tables": {}, "sha256": "0" * 64}},
    {"database": "data.db", "txid": "1", "fingerprint": {"tables": {}, "sha256": "0" * 64}},
    {"database": "data.db", "txid": 2 ** 64, "fingerprint": {"tables": {}, "sha256": "0" * 64}},
    {"database": "data.db", "txid": 1, "fingerprint": {"tables": {"t": -1}, "sha256": "0" * 64}},
    {"database": "data.db", "txid": 1, "fingerprint": {"tables": {}, "sha256": "nope"}},
])
def test_a_malformed_report_is_a_clear_400(make_team, client, body):
    team = make_team()
    answer = report(client, team, body)
    assert answer.status_code == 400 and answer.json()["error"]
    assert not ReportedFingerprint.objects.exists()


def test_no_fingerprint_is_taken_while_litestream_is_behind(live, s3_env, client):
    (team, db), _other = live
    synced = synced_report(db)
    insert_rows(db, range(100, 110))  # committed, not yet synced: the synced txid's state is gone
    assert instance_fingerprint.fingerprint_at_synced_txid(db) is None
    sync(team, s3_env, client, db)
    assert synced_report(db)["txid"] > synced["txid"]
