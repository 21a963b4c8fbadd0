"""Keeps instances that should run, running; reports crashes and stops restarting a crash loop.

The local backend has no platform restarting its processes, so `manage.py dev` calls `supervise()` every
few seconds. Each restart goes through provisioning (idempotent steps), queued for the worker.
"""

from datetime import timedelta

from django.utils import timezone

from teams import timeline
from teams.models import TeamEvent

from . import rollouts
from .backends import ObservedState, get_backend
from .models import Instance
from .services import request_provisioning

CRASH_LOOP_LIMIT = 3
CRASH_LOOP_WINDOW = timedelta(minutes=10)


def supervise(backend_path: str, *, actor: str) -> list[str]:
    """One pass over the instances of one backend; returns what it did, a line per instance acted on. A crash
    loop is counted from the timeline's CRASHED events: their kind, never their message."""
    actions = []
    # A live deployment stops and starts the teams it is changing: restarting one under it would race its own
    # start (on the image the database still names) and count its failed starts toward a crash loop.
    being_deployed = rollouts.team_ids_being_deployed()
    # An instance that scaled to zero (it said so, and has not booted since) stays down until a request wakes
    # it (the embedded router, as Fly's proxy does): restarting it would undo the scale to zero.
    watched = Instance.objects.filter(
        backend=backend_path, desired_state=Instance.State.RUNNING, state=Instance.State.RUNNING,
    ).exclude(team_id__in=being_deployed).exclude(
        scaled_to_zero_at__isnull=False, backups_expected_since__isnull=True).select_related("team")
    backend = get_backend(backend_path)
    for instance in watched:
        observed = backend.observe(instance)
        if observed is ObservedState.RUNNING:
            continue
        team = instance.team
        if observed is ObservedState.CRASHED:
            timeline.record(team, timeline.Kind.CRASHED,
                            f"instance crashed; last log lines:\n{backend.log_tail(instance)}", actor=actor,
                            data={"observed": observed.value}, is_error=True)
            recent = TeamEvent.objects.filter(team=team, kind=timeline.Kind.CRASHED,
                                              created_at__gte=timezone.now() - CRASH_LOOP_WINDOW).count()
            if recent >= CRASH_LOOP_LIMIT:
                instance.state, instance.last_error = Instance.State.FAILED, f"crashed {recent} times in 10 minutes"
                instance.save(update_fields=["state", "last_error", "updated_at"])
                timeline.record(team, timeline.Kind.CRASH_LOOP, "not restarting: " + instance.last_error,
                                actor=actor, is_error=True,
                                data={"crashes": recent, "window_seconds": CRASH_LOOP_WINDOW.total_seconds()})
                actions.append(f"{team.slug}: crash loop, left failed")
                continue
        else:
            timeline.record(team, timeline.Kind.EXITED, f"instance {observed.value}; restarting", actor=actor,
                            data={"observed": observed.value})
        instance.state = Instance.State.PENDING
        instance.save(update_fields=["state", "updated_at"])
        request_provisioning(team, actor=actor)
        actions.append(f"{team.slug}: {observed.value}, restart queued")
    return actions


def stop_all(backend_path: str) -> int:
    """Stop every instance of a backend (the control plane is going down); they restart with it."""
    backend = get_backend(backend_path)
    stopped = 0
    for instance in Instance.objects.filter(backend=backend_path).exclude(state=Instance.State.DESTROYED):
        if backend.observe(instance) is ObservedState.RUNNING:
            backend.stop(instance)
            stopped += 1
    return stopped
