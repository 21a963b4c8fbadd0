"""The interface every machine backend implements: what provisioning, supervision and deploys need."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from instances.models import Instance
    from instances.specs import InstanceSpec


class BackendError(Exception):
    """A backend operation failed; the message is safe to show an operator (no secrets)."""


class BackendUnavailable(BackendError):
    """The platform did not answer or asked us to slow down (408, 409 lease held, 429, 5xx): nothing is known
    to be wrong with the instance, and the same operation can simply be tried again."""


class ObservedState(enum.Enum):
    """What the backend sees, as opposed to what the database last recorded."""

    RUNNING = "running"
    STOPPED = "stopped"  # exited cleanly or stopped on purpose (scale to zero, max age)
    CRASHED = "crashed"  # exited with an error
    MISSING = "missing"  # no machine at all (never made, or destroyed outside cloudctl)


# The observed states in which an instance is unhealthy, with how a deploy reports them.
UNHEALTHY_STATES = {ObservedState.CRASHED: "it crashed", ObservedState.MISSING: "it has no machine"}


@dataclass(frozen=True)
class Step:
    """One idempotent provisioning step: checks what exists, makes what is missing, returns the ids to save."""

    name: str
    run: Callable[["Instance"], dict]


class MachineBackend(abc.ABC):
    def __init__(self, *, spec_for: Callable[[Instance], InstanceSpec] | None = None):
        """`spec_for` gives what an instance is to run with (environment, secrets, image, placement): a backend
        receives that and never assembles it, nor makes a token, itself. By default `instances.specs.build_spec`."""
        if spec_for is None:
            # Only as the default, when no caller passed one: backends build on the spec, not on its maker.
            from instances.specs import build_spec as spec_for
        self.spec_for = spec_for

    @abc.abstractmethod
    def provisioning_steps(self) -> list[Step]:
        """The ordered steps that take a team from nothing to a healthy instance. Each is safe to re-run."""

    @abc.abstractmethod
    def observe(self, instance: Instance) -> ObservedState:
        """The instance's real state, read from the backend."""

    def observe_many(self, instances: list[Instance]) -> dict[int, ObservedState]:
        """The real state of many instances by team id; backends with a bulk listing override this."""
        return {instance.team_id: self.observe(instance) for instance in instances}

    @abc.abstractmethod
    def start(self, instance: Instance) -> dict:
        """Start a stopped instance; returns resources to save."""

    @abc.abstractmethod
    def stop(self, instance: Instance) -> None:
        """Stop the instance cleanly (its backup finishes its last sync)."""

    @abc.abstractmethod
    def destroy(self, instance: Instance) -> None:
        """Remove compute and volume. Backups in S3 are kept."""

    @abc.abstractmethod
    def update(self, instance: Instance, image: str, *, before_change: Callable[[str], None] | None = None) -> dict:
        """Make the instance run `image`, read back to verify, and return resources to save. A stopped instance
        is updated without being started; a running one restarts and must pass its health checks, as must a
        crashed one (it should run: an earlier start or update failed), which is started. Calling it
        again once it runs `image` changes nothing (it only checks health again), so it is safe to retry.
        `before_change` is called with the image the backend reports, just before it is replaced (not at all
        when it already is `image`): the caller can record it before anything changes."""

    def health_problem(self, instance: Instance) -> str | None:
        """Why the instance is unhealthy right now, read from the backend (crashed, gone, or running but failing
        its health check), or None when it is healthy or stopped on purpose (scale to zero). A deploy leaves an
        unhealthy team alone: its failure after the update would prove nothing about the image. This default
        reads the state only; backends that can check a running instance's health cheaply override it."""
        return UNHEALTHY_STATES.get(self.observe(instance))

    @abc.abstractmethod
    def running_image(self, instance: Instance) -> str | None:
        """The image/version the backend really has for the instance, never what the database recorded: the one
        its process or Machine runs, or for a stopped instance the one the backend will start it on (a Fly
        Machine's config); None when nothing runs and the backend keeps no image of its own (the local backend's
        stopped or crashed instance)."""
