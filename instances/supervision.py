"""`manage.py dev`'s loop over its local instances: the reconciler (`reconcile.reconcile_instance`) every few
seconds, with each restart queued for the worker instead of run in the loop, and a line per instance acted on.
Nothing but the control plane watches local processes; on Fly the periodic fleet pass (`reconcile.reconcile`)
runs the same rules. It lives apart from `reconcile` because it queues through the services, which queue the
tasks that run `reconcile`."""

from .backends import ObservedState
from .machines import get_backend
from .models import Instance
from .reconcile import ReconcileResult, reconcile_instance
from .services import request_provisioning


def supervise(backend_path: str, *, actor: str) -> list[str]:
    """One pass over the instances of one backend; returns what it did, a line per instance acted on."""
    lines = []
    watched = Instance.objects.filter(backend=backend_path).exclude(state=Instance.State.DESTROYED)
    for instance_id in watched.order_by("pk").values_list("pk", flat=True):
        lines += _lines(reconcile_instance(instance_id, actor=actor, restart=request_provisioning))
    return lines


def _lines(result: ReconcileResult) -> list[str]:
    if result.restarted:
        return [f"{result.team}: {result.observed.value}, restart queued"]
    return [f"{result.team}: {finding.kind.replace('_', ' ')}, {finding.detail}" for finding in result.findings]


def stop_all(backend_path: str) -> int:
    """Stop every instance of a backend (the control plane is going down); they restart with it."""
    backend = get_backend(backend_path)
    stopped = 0
    for instance in Instance.objects.filter(backend=backend_path).exclude(state=Instance.State.DESTROYED):
        if backend.observe(instance) is ObservedState.RUNNING:
            backend.stop(instance)
            stopped += 1
    return stopped
