"""`GET /private/metrics`: fleet gauges in Prometheus' text format (prometheus_client), read from the
database at scrape time, so every process (web, private, worker) reports the same numbers.

Private on two counts: only the private URL conf mounts it (the private-network process), and it requires
`Authorization: Bearer <CLOUDCTL_METRICS_TOKEN>`. Add a gauge by appending a function to `COLLECTORS`.
"""

import hmac
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from backups.selectors import drill_coverage, last_drills, running_teams_backup_health
from console.selectors import fleet_summary
from credentials.retention import credential_event_totals


def fleet() -> Iterable[Metric]:
    summary = fleet_summary()
    teams = GaugeMetricFamily("cloudctl_teams", "Teams by status.", labels=["status"])
    for status, count in summary.teams_by_status.items():
        teams.add_metric([status], count)
    instances = GaugeMetricFamily("cloudctl_instances", "Team instances by state.", labels=["state"])
    for state, count in summary.instances_by_state.items():
        instances.add_metric([state], count)
    stale = GaugeMetricFamily("cloudctl_stale_backups",
                              "Running instances with no backup heartbeat within CLOUDCTL_BACKUP_STALE_AFTER.")
    stale.add_metric([], summary.stale_backups)
    return [teams, instances, stale]


def credential_events() -> Iterable[Metric]:
    # Totals kept past pruning (credentials.retention): counters, whose cost does not grow with the audit table.
    family = CounterMetricFamily("cloudctl_credential_events", "Credential issuances and refusals (refused "
                                 "instance signals and throttled requests included), by kind, reason and signal.",
                                 labels=["kind", "reason", "signal"])
    for (kind, reason, signal), count in sorted(credential_event_totals().items()):
        family.add_metric([kind, reason, signal], count)
    return [family]


def task_queue() -> Iterable[Metric]:
    family = GaugeMetricFamily("cloudctl_task_queue_depth", "Background tasks waiting or running, by queue.",
                               labels=["queue", "status"])
    rows = (DBTaskResult.objects.filter(status__in=[TaskResultStatus.READY, TaskResultStatus.RUNNING])
            .order_by().values_list("queue_name", "status").annotate(n=Count("pk")))
    for queue, status, count in rows:
        family.add_metric([queue, status.lower()], count)
    return [family]


def restore_drills() -> Iterable[Metric]:
    drilled, running = drill_coverage()
    coverage = GaugeMetricFamily("cloudctl_restore_drill_coverage",
                                 "Running teams drilled within CLOUDCTL_DRILL_PERIOD, and running teams.",
                                 labels=["teams"])
    coverage.add_metric(["drilled"], drilled)
    coverage.add_metric(["running"], running)
    passed = GaugeMetricFamily("cloudctl_restore_drill_passed", "1 if the team's last restore drill passed.",
                               labels=["team"])
    started = GaugeMetricFamily("cloudctl_restore_drill_timestamp_seconds", "When the team's last drill started.",
                                labels=["team"])
    duration = GaugeMetricFamily("cloudctl_restore_drill_duration_seconds", "How long the last drill took.",
                                 labels=["team"])
    restore = GaugeMetricFamily("cloudctl_restore_drill_restore_seconds", "Of the last drill, how long its restore "
                                "took (before the integrity check and fingerprint).", labels=["team"])
    lag = GaugeMetricFamily("cloudctl_restore_drill_lag_seconds", "How far the last drill's restored point was "
                            "behind the team's last backup heartbeat.", labels=["team"])
    for drill in last_drills():
        slug = drill.team.slug
        passed.add_metric([slug], int(drill.passed))
        started.add_metric([slug], drill.started_at.timestamp())
        duration.add_metric([slug], drill.duration_seconds)
        if drill.restore_seconds is not None:
            restore.add_metric([slug], drill.restore_seconds)
        if drill.lag_seconds is not None:
            lag.add_metric([slug], drill.lag_seconds)
    return [coverage, passed, started, duration, restore, lag]


def backup_health() -> Iterable[Metric]:
    healthy = GaugeMetricFamily("cloudctl_backup_healthy", "1 if the running team's backup is healthy: backup "
                                "heartbeat within CLOUDCTL_BACKUP_STALE_AFTER and last restore drill passed.",
                                labels=["team"])
    for team, is_healthy in running_teams_backup_health().items():
        healthy.add_metric([team.slug], int(is_healthy))
    return [healthy]


COLLECTORS: list[Callable[[], Iterable[Metric]]] = [fleet, credential_events, task_queue, restore_drills,
                                                    backup_health]


class _FleetCollector:
    def collect(self):
        for collector in COLLECTORS:
            yield from collector()


registry = CollectorRegistry(auto_describe=False)
registry.register(_FleetCollector())


def _authorized(request) -> bool:
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(presented) and hmac.compare_digest(presented.encode(), settings.METRICS_TOKEN.encode())


def metrics(request):
    if request.method != "GET":
        return JsonResponse({"error": "use GET"}, status=405, headers={"Allow": "GET"})
    if not _authorized(request):
        return JsonResponse({"error": "metrics need Authorization: Bearer <CLOUDCTL_METRICS_TOKEN>"}, status=401,
                            headers={"WWW-Authenticate": "Bearer"})
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})


def deploy_progress() -> Iterable[Metric]:
    from deploys.models import Deployment
    from deploys.selectors import deployment_progress, open_deployment

    deployment = open_deployment() or Deployment.objects.first()
    is_open = GaugeMetricFamily("cloudctl_deployment_open",
                                "1 while a deployment is open (running, interrupted or rolling back).")
    is_open.add_metric([], int(bool(deployment and deployment.is_open)))
    teams = GaugeMetricFamily("cloudctl_deployment_teams", "Teams of the open deployment (else the latest) by step.",
                              labels=["deployment", "image", "step"])
    if deployment is not None:
        for step, count in deployment_progress(deployment).items():
            teams.add_metric([str(deployment.pk), deployment.image, step], count)
    return [is_open, teams]


COLLECTORS.append(deploy_progress)
