"""`/private/metrics`: private, and the fleet's numbers as Prometheus reads them."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from backups.tasks import check_backups
from credentials.models import CredentialEvent
from instances.models import Instance
from teams.models import Team

pytestmark = pytest.mark.django_db


def scrape(client, settings) -> dict[tuple, float]:
    response = client.get("/private/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}


def test_metrics_need_the_bearer_token(client, settings):
    assert client.get("/private/metrics").status_code == 401
    assert client.get("/private/metrics", HTTP_AUTHORIZATION="Bearer wrong").json()["error"].startswith("metrics need")
    assert client.post("/private/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").status_code == 405


def test_the_public_urlconf_does_not_serve_metrics(client, settings):
    settings.ROOT_URLCONF = "cloudctl.urls_public"
    assert client.get("/private/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").status_code == 404


def test_fleet_gauges(client, settings, make_team):
    settings.BACKUP_STALE_AFTER = 600
    running, stale, failed, disabled = (make_team() for _ in range(4))
    long_ago = timezone.now() - timedelta(hours=1)
    for team, state in [(running, "running"), (stale, "running"), (failed, "failed")]:
        Instance.objects.create(team=team, backend="x", state=state)
    Instance.objects.filter(team__in=[running, stale]).update(backups_expected_since=long_ago)
    Instance.objects.filter(team=running).update(last_backup_at=timezone.now())
    Team.objects.filter(pk=disabled.pk).update(status="disabled")
    CredentialEvent.objects.create(kind="issued", team=running)
    CredentialEvent.objects.create(kind="refused", reason="revoked", team=stale)
    CredentialEvent.objects.create(kind="refused", reason="wrong_team", signal="backup", team=stale)

    check_backups.enqueue()
    check_backups.enqueue()

    samples = scrape(client, settings)
    assert samples[("cloudctl_teams", (("status", "active"),))] == 3
    assert samples[("cloudctl_teams", (("status", "disabled"),))] == 1
    assert samples[("cloudctl_instances", (("state", "running"),))] == 2
    assert samples[("cloudctl_instances", (("state", "failed"),))] == 1
    assert samples[("cloudctl_stale_backups", ())] == 1
    assert samples[("cloudctl_credential_events_total", (("kind", "issued"), ("reason", ""), ("signal", "")))] == 1
    assert samples[("cloudctl_credential_events_total",
                    (("kind", "refused"), ("reason", "wrong_team"), ("signal", "backup")))] == 1
    assert samples[("cloudctl_task_queue_depth", (("queue", "default"), ("status", "ready")))] == 2


def test_restore_drill_gauges(client, settings, make_team):
    from backups.models import RestoreDrill

    passing, failing, undrilled = (make_team() for _ in range(3))
    for team in (passing, failing, undrilled):
        Instance.objects.create(team=team, backend="x", state="running")
    for team, status in [(passing, "succeeded"), (failing, "failed")]:
        RestoreDrill.objects.create(team=team, database="data.db", started_at=timezone.now() - timedelta(days=8),
                                    duration_seconds=9.0, status="succeeded", actor="test")
        RestoreDrill.objects.create(team=team, database="data.db", started_at=timezone.now(), duration_seconds=2.5,
                                    restore_seconds=2.0 if team == passing else None, status=status,
                                    lag_seconds=4.0, actor="test")
    samples = scrape(client, settings)
    assert samples[("cloudctl_restore_drill_coverage", (("teams", "drilled"),))] == 2
    assert samples[("cloudctl_restore_drill_coverage", (("teams", "running"),))] == 3
    assert samples[("cloudctl_restore_drill_passed", (("team", passing.slug),))] == 1
    assert samples[("cloudctl_restore_drill_passed", (("team", failing.slug),))] == 0
    assert samples[("cloudctl_restore_drill_duration_seconds", (("team", passing.slug),))] == 2.5
    assert samples[("cloudctl_restore_drill_restore_seconds", (("team", passing.slug),))] == 2.0
    assert ("cloudctl_restore_drill_restore_seconds", (("team", failing.slug),)) not in samples  # none restored
    assert samples[("cloudctl_restore_drill_lag_seconds", (("team", failing.slug),))] == 4.0
    assert ("cloudctl_restore_drill_passed", (("team", undrilled.slug),)) not in samples
