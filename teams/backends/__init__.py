"""Machine backends, selected by dotted path like Django's email backends (CLOUDCTL_MACHINE_BACKEND)."""

import functools

from django.conf import settings
from django.utils.module_loading import import_string

from .base import BackendError, BackendUnavailable, MachineBackend, ObservedState, Step

__all__ = ["BackendError", "BackendUnavailable", "MachineBackend", "ObservedState", "Step", "get_backend"]


@functools.cache
def get_backend(path: str | None = None) -> MachineBackend:
    return import_string(path or settings.MACHINE_BACKEND)()
