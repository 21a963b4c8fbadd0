"""Issue 16, acceptance (2): a team's backup turns red for each way its backups break, within one drill or
heartbeat interval, never before, and never for the untouched teams.

Real parts: three teams whose instances replicate with the real Litestream (`replicate -once`, one sync per
cycle) to the enforcing local S3 with STS credentials exchanged through the private API, and ping their heartbeat
URL through the private API after every sync that succeeded (what Litestream's `heartbeat-url` does); real drills
(`drill_due_teams`) with read-only credentials. Time does not pass in the test: the heartbeat side is judged at
chosen instants (`now=`), and a drill interval passes by dating the teams' last drills one period back.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db.models import F
from django.utils import timezone

from backups.drills import drill_due_teams, due_teams
from backups.models import RestoreDrill
from backups.selectors import backup_is_healthy
from backups.services import check_backup_freshness
from instances.models import Instance
from teams.models import TeamEvent
from teams.services import rotate_token
from teams.tokens import team_token

from .test_litestream import (
    URL, admin_s3, create_wal_database, delete_prefix, insert_rows, litestream, litestream_env, write_config,
)
from .test_metrics import scrape
from .test_restore_drills import replica_keys

STALE_AFTER = 300
DRILL_PERIOD = 3600
BREAKS = ["delete a replica object", "corrupt a replica object", "revoke the token", "stop Litestream"]


@dataclass
class TeamInstance:
    """What a team's instance does for its backups: exchange its token, sync, ping the heartbeat on success."""
    team: object
    token: str
    db: Path
    config: Path
    env: dict | None = None
    heartbeat_path: str = ""
    litestream_runs: bool = True
    next_row: int = 1

    def renew_credentials(self, client) -> int:
        response = client.post(URL, HTTP_AUTHORIZATION=f"Bearer {self.token}")
        if response.status_code == 200:  # a refused renewal keeps the credentials it has (valid up to 12 h)
            body = response.json()
            self.env = litestream_env(body)
            self.heartbeat_path = urlsplit(body["Signals"]["heartbeat_url"]).path
        return response.status_code

    def sync(self, client) -> int | None:
        """One Litestream sync of a new row; the heartbeat's status when it synced, None when nothing ran."""
        insert_rows(self.db, range(self.next_row, self.next_row + 5))
        self.next_row += 5
        if not self.litestream_runs:
            return None
        synced = litestream("replicate", "-once", "-config", self.config, env=self.env)
        assert synced.returncode == 0, synced.stderr
        return client.get(self.heartbeat_path).status_code


@pytest.fixture
def fleet(s3_env, make_team, client, tmp_path, settings):
    settings.BACKUP_STALE_AFTER, settings.DRILL_PERIOD = STALE_AFTER, DRILL_PERIOD
    settings.DRILL_BUDGET_DRILLS, settings.DRILL_BUDGET_SECONDS = 10, 600  # every team, however slow the machine
    admin, instances = admin_s3(s3_env), []
    for number in range(3):
        team = make_team()
        delete_prefix(admin, s3_env.bucket, f"{team.storage_prefix}data.db/")
        Instance.objects.update_or_create(team=team, defaults=dict(
            backend="x", state=Instance.State.RUNNING, backups_expected_since=timezone.now() - timedelta(hours=1)))
        folder = tmp_path / str(number)
        folder.mkdir()
        db = folder / "data.db"
        create_wal_database(db, range(0))
        instance = TeamInstance(team=team, token=team_token(team), db=db,
                                config=write_config(folder / "litestream.yml", db, s3_env,
                                                    f"{team.storage_prefix}data.db"))
        assert instance.renew_credentials(client) == 200
        instances.append(instance)
    yield instances, admin
    for instance in instances:
        delete_prefix(admin, s3_env.bucket, f"{instance.team.storage_prefix}data.db/")


def cycle(instances, client) -> None:
    """Every instance renews its credentials and syncs once."""
    for instance in instances:
        instance.renew_credentials(client)
        instance.sync(client)


def last_heartbeat(team) -> datetime:
    return Instance.objects.get(team=team).last_backup_at


def break_backups(how: str, instance: TeamInstance, admin, bucket: str) -> None:
    if how == "stop Litestream":
        instance.litestream_runs = False
        return
    if how == "revoke the token":
        rotate_token(instance.team, actor="test")  # the instance keeps the token it was started with
        return
    # One in the middle of the chain: Litestream's next sync rewrites a missing newest object (it syncs from the
    # replica's position), it never looks back at older ones, and a restore of the latest needs them all.
    keys = replica_keys(admin, bucket, instance.team)
    assert len(keys) >= 3, keys
    key = keys[len(keys) // 2]
    if how == "delete a replica object":
        admin.delete_object(Bucket=bucket, Key=key)
    else:  # overwrite bytes in the middle of the LTX file
        body = bytearray(admin.get_object(Bucket=bucket, Key=key)["Body"].read())
        middle = len(body) // 2
        body[middle:middle + 16] = bytes(byte ^ 0xFF for byte in body[middle:middle + 16])
        admin.put_object(Bucket=bucket, Key=key, Body=bytes(body))


def a_drill_interval_passes() -> None:
    RestoreDrill.objects.update(started_at=F("started_at") - timedelta(seconds=DRILL_PERIOD))


@pytest.mark.parametrize("how", BREAKS)
def test_one_break_turns_that_team_red_within_one_interval_never_before_and_no_other(
        fleet, how, s3_env, client, settings):
    instances, admin = fleet
    broken, untouched = instances[0], instances[1:]
    for _ in range(3):  # a few transactions: a replica of several objects
        cycle(instances, client)
    assert [drill.passed for drill in drill_due_teams(actor="test")] == [True, True, True]
    assert all(backup_is_healthy(instance.team) for instance in instances)

    break_backups(how, broken, admin, s3_env.bucket)
    cycle(instances, client)
    if how == "revoke the token":
        # Neither its credential renewal nor its heartbeat works with the revoked token's URL any more.
        assert broken.renew_credentials(client) == 401
        assert broken.sync(client) == 403
    broken_heartbeat = last_heartbeat(broken.team)
    untouched_heartbeat = min(last_heartbeat(instance.team) for instance in untouched)
    assert untouched_heartbeat > broken_heartbeat

    # Never before: up to one heartbeat threshold after its last heartbeat, and before its next drill, it is green.
    not_yet = broken_heartbeat + timedelta(seconds=STALE_AFTER)
    assert all(backup_is_healthy(instance.team, now=not_yet) for instance in instances)
    assert all(backup_is_healthy(instance.team) for instance in instances)
    assert due_teams() == []
    assert check_backup_freshness(now=not_yet, actor="test") == []

    # One drill interval later every team is drilled; a damaged replica fails its team's drill only.
    a_drill_interval_passes()
    drills = {drill.team: drill for drill in drill_due_teams(actor="test")}
    assert set(drills) == {instance.team for instance in instances}
    replica_damaged = how in ("delete a replica object", "corrupt a replica object")
    assert drills[broken.team].passed is not replica_damaged  # a heartbeat break is the heartbeat's to show
    assert all(drills[instance.team].passed for instance in untouched)
    if how == "delete a replica object":  # not the older point before the gap, which would restore
        assert "is not restorable" in drills[broken.team].message
    # Judged now (every heartbeat fresh) for a damaged replica; for a heartbeat break, just past one threshold
    # after the broken team's last heartbeat, when the untouched teams' later ones are still fresh.
    judged_at = None if replica_damaged else (
        broken_heartbeat + (untouched_heartbeat - broken_heartbeat) / 2 + timedelta(seconds=STALE_AFTER))
    assert not backup_is_healthy(broken.team, now=judged_at)
    assert all(backup_is_healthy(instance.team, now=judged_at) for instance in untouched)

    # One alert per episode: the drill's at its first failure, the heartbeat's at its first stale check.
    assert check_backup_freshness(now=judged_at, actor="test") == ([] if replica_damaged else [broken.team])
    assert check_backup_freshness(now=judged_at, actor="test") == []
    a_drill_interval_passes()
    assert not any(drill.alerted for drill in drill_due_teams(actor="test"))
    alerts = TeamEvent.objects.filter(is_error=True, kind__in=[TeamEvent.Kind.RESTORE_DRILL_FAILED,
                                                               TeamEvent.Kind.BACKUP_STALE])
    assert [(event.team, event.kind) for event in alerts] == [(broken.team, TeamEvent.Kind.RESTORE_DRILL_FAILED
                                                               if replica_damaged else TeamEvent.Kind.BACKUP_STALE)]

    if judged_at is not None:  # the scrape reads the clock: let the heartbeats' time pass, for every team alike
        shift = judged_at - timezone.now()
        Instance.objects.update(last_backup_at=F("last_backup_at") - shift,
                                backups_expected_since=F("backups_expected_since") - shift)
    metrics = scrape(client, settings)
    for instance in instances:
        labels = (("team", instance.team.slug),)
        assert metrics[("cloudctl_restore_drill_passed", labels)] == int(not (instance is broken and replica_damaged))
        assert metrics[("cloudctl_backup_healthy", labels)] == int(instance is not broken)
