"""Machine backends, selected by dotted path like Django's email backends (CLOUDCTL_MACHINE_BACKEND)."""

import functools
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.utils.module_loading import import_string

from .base import BackendError, BackendUnavailable, MachineBackend, ObservedState, Step

__all__ = ["BackendError", "BackendUnavailable", "MachineBackend", "ObservedState", "Step", "get_backend",
           "observe_by_backend"]


@functools.cache
def get_backend(path: str | None = None) -> MachineBackend:
    return import_string(path or settings.MACHINE_BACKEND)()


def observe_by_backend(instances: Iterable) -> Iterator[tuple[list, dict[int, ObservedState] | BackendError]]:
    """The instances grouped by the backend they run on, each group with one bulk read of their real states (by
    team id), or the BackendError that read raised: what an unreadable backend means is the caller's to say."""
    instances = list(instances)
    for path in {instance.backend for instance in instances}:
        group = [instance for instance in instances if instance.backend == path]
        try:
            observed = get_backend(path).observe_many(group)
        except BackendError as error:
            observed = error
        yield group, observed
