"""Machine backends: the interface (`base`) and its implementations (`local`, `fly`). Each is built with its
options and reads no settings: `instances.machines.get_backend` builds them from the settings."""

from .base import BackendError, BackendUnavailable, MachineBackend, Observation, ObservedState, Step

__all__ = ["BackendError", "BackendUnavailable", "MachineBackend", "Observation", "ObservedState", "Step"]
