"""Which teams are due a restore drill, and the backup health rule: heartbeat fresh AND last drill passed
(no database server, no Litestream: drills are recorded rows here)."""

from datetime import timedelta

from django.utils import timezone

from backups import drills
from backups.drills import drill_due_teams, due_teams
from backups.models import RestoreDrill
from backups.selectors import backup_is_healthy, running_teams_backup_health
from instances.models import Instance


def record_drill(team, *, ago: timedelta, status=RestoreDrill.Status.SUCCEEDED, matched=None) -> RestoreDrill:
    return RestoreDrill.objects.create(team=team, database="data.db", started_at=timezone.now() - ago,
                                       duration_seconds=1.0, status=status, fingerprint_matched=matched,
                                       actor="test")


def running(team, *, heartbeat_ago: timedelta | None) -> None:
    long_ago = timezone.now() - timedelta(hours=2)
    Instance.objects.update_or_create(team=team, defaults=dict(backend="x",
        state=Instance.State.RUNNING, backups_expected_since=long_ago,
        last_backup_at=None if heartbeat_ago is None else timezone.now() - heartbeat_ago))


def test_healthy_only_with_a_fresh_heartbeat_and_a_passing_last_drill(make_team, settings):
    settings.BACKUP_STALE_AFTER = 900
    healthy, stale, failed, undrilled, mismatched = (make_team() for _ in range(5))
    for team in (healthy, failed, undrilled, mismatched):
        running(team, heartbeat_ago=timedelta(seconds=10))
    running(stale, heartbeat_ago=timedelta(seconds=901))
    for team in (healthy, stale):
        record_drill(team, ago=timedelta(hours=1))
    record_drill(failed, ago=timedelta(hours=2))
    record_drill(failed, ago=timedelta(hours=1), status=RestoreDrill.Status.FAILED)
    record_drill(mismatched, ago=timedelta(hours=1), matched=False)
    assert backup_is_healthy(healthy)
    assert not backup_is_healthy(stale)  # the drill passed, the heartbeat disagrees: red
    assert not backup_is_healthy(failed)  # the heartbeat is fresh, the last drill disagrees: red
    assert not backup_is_healthy(undrilled)
    assert not backup_is_healthy(mismatched)
    # Not before the threshold: a heartbeat 899 s old is still fresh.
    running(stale, heartbeat_ago=timedelta(seconds=899))
    assert backup_is_healthy(stale)
    # The fleet's read (the metrics) is the same rule.
    teams = (healthy, stale, failed, undrilled, mismatched)
    assert running_teams_backup_health() == {team: backup_is_healthy(team) for team in teams}
    assert list(running_teams_backup_health(now=timezone.now() + timedelta(seconds=901)).values()) == [False] * 5


def test_due_teams_are_the_never_drilled_then_the_longest_ago_within_the_period(make_team, settings):
    settings.DRILL_PERIOD = 7 * 24 * 3600
    never, week_old, day_old, stopped = (make_team() for _ in range(4))
    for team in (never, week_old, day_old):
        running(team, heartbeat_ago=timedelta(seconds=1))
    Instance.objects.create(team=stopped, backend="x", state=Instance.State.STOPPED)
    record_drill(week_old, ago=timedelta(days=7, minutes=1))
    record_drill(day_old, ago=timedelta(days=1))
    assert due_teams() == [never, week_old]


def test_a_run_stays_within_its_budget_of_drills(make_team, settings, monkeypatch):
    settings.DRILL_BUDGET_DRILLS, settings.DRILL_BUDGET_SECONDS = 2, 3600
    teams = [make_team() for _ in range(3)]
    for team in teams:
        running(team, heartbeat_ago=timedelta(seconds=1))
    monkeypatch.setattr(drills, "drill_team", lambda team, *, actor: record_drill(team, ago=timedelta(0)))
    assert [drill.team for drill in drill_due_teams(actor="test")] == teams[:2]
    assert [drill.team for drill in drill_due_teams(actor="test")] == teams[2:]
    assert drill_due_teams(actor="test") == []


def test_a_run_with_no_seconds_left_drills_nothing(make_team, settings, monkeypatch):
    settings.DRILL_BUDGET_DRILLS, settings.DRILL_BUDGET_SECONDS = 10, 0
    running(make_team(), heartbeat_ago=timedelta(seconds=1))
    monkeypatch.setattr(drills, "drill_team", lambda team, *, actor: record_drill(team, ago=timedelta(0)))
    assert drill_due_teams(actor="test") == []


def test_the_team_page_shows_the_last_verified_restore_and_health(make_team, staff_client, settings):
    from django.urls import reverse

    settings.BACKUP_STALE_AFTER = 900
    team = make_team()
    running(team, heartbeat_ago=timedelta(seconds=5))
    url = reverse("dashboard:team", args=[team.slug])
    page = staff_client.get(url).content.decode()
    assert "never drilled" in page and 'id="backup-health" class="error"' in page
    drill = record_drill(team, ago=timedelta(minutes=3))
    RestoreDrill.objects.filter(pk=drill.pk).update(restored_txid="00000000000000a1", lag_seconds=7.0,
                                                          restore_seconds=0.8)
    page = staff_client.get(url).content.decode()
    assert "succeeded, txid <code>00000000000000a1</code>, took 1.0 s (restore 0.8 s), lag 7 s" in page
    assert 'id="backup-health" class="ok"' in page
    record_drill(team, ago=timedelta(minutes=1), status=RestoreDrill.Status.TIMED_OUT)
    assert 'id="backup-health" class="error"' in staff_client.get(url).content.decode()


def test_the_fleet_home_shows_coverage_and_failures(make_team, staff_client):
    from django.urls import reverse

    drilled, failing, undrilled = (make_team() for _ in range(3))
    for team in (drilled, failing, undrilled):
        running(team, heartbeat_ago=timedelta(seconds=5))
    record_drill(drilled, ago=timedelta(hours=1))
    record_drill(failing, ago=timedelta(hours=1), status=RestoreDrill.Status.FAILED)
    page = staff_client.get(reverse("dashboard:home")).content.decode()
    assert ('<strong>2/3</strong> running teams drilled this period, <strong>1</strong> last drills failed'
            in page)
