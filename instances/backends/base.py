"""The interface every machine backend implements: what provisioning, reconcile and deploys need.

A backend is built with its options (`instances.backends.get_backend` passes them from the settings, as Django
builds its storages from STORAGES) and reads no settings itself. What only some backends can do is an optional
method that raises NotImplementedError here, as Django's session backends do: callers catch it and skip.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flyapi import FlyClient
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
class Observation:
    """What reconcile reads of one instance in one look: its state, the image the backend has for it
    (`running_image`; None when nothing runs and the backend keeps no image of its own) and, for a backend that
    can make two machines for one team (a create whose answer was lost), the extra ones by id."""

    state: ObservedState
    image: str | None = None
    extra_machines: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeaseRecord:
    """A platform lease a backend holds on a machine, as its ledger records it."""

    app: str
    machine_id: str
    nonce: str
    holder: str  # who took it (`LeaseLedger.new_holder`): a run that died leaves its lease to be released
    expires_at: datetime


class LeaseLedger(abc.ABC):
    """Where a backend records the leases it takes, so that one left by a run that died can be released instead
    of blocking every later operation until it expires. Passed to the backend when it is built: the backend
    never reaches the database (`instances.leases.MachineLeaseLedger` keeps them there)."""

    @abc.abstractmethod
    def new_holder(self) -> str:
        """A holder id for a lease this process is about to take."""

    @abc.abstractmethod
    def record(self, lease: LeaseRecord) -> None:
        """Remember `lease` as the one held on its machine (replacing any recorded before)."""

    @abc.abstractmethod
    def refresh(self, app: str, machine_id: str, nonce: str, expires_at: datetime) -> None:
        """The lease with `nonce` was extended until `expires_at`."""

    @abc.abstractmethod
    def forget(self, app: str, machine_id: str, nonce: str) -> None:
        """The lease with `nonce` was released (nothing happens if another is recorded by now)."""

    @abc.abstractmethod
    def lookup(self, app: str, machine_id: str) -> LeaseRecord | None:
        """The lease recorded on a machine, if any."""

    @abc.abstractmethod
    def abandoned(self) -> list[LeaseRecord]:
        """The recorded leases whose holder died or that expired: safe to release."""

    @abc.abstractmethod
    def is_abandoned(self, lease: LeaseRecord) -> bool:
        """Whether `lease`'s holder died or it expired."""


@dataclass(frozen=True)
class Step:
    """One idempotent provisioning step: checks what exists, makes what is missing, returns the ids to save."""

    name: str
    run: Callable[["Instance"], dict]


@dataclass(frozen=True)
class RestoreSource:
    """What a point-in-time restore reads: a team's replica (Litestream's S3 settings), the transaction to stop at
    (hex, as `-txid` takes it) and read-only credentials for the team's prefix, never stored."""

    bucket: str
    path: str
    region: str
    endpoint: str  # "" for AWS itself
    txid_hex: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)


class MachineBackend(abc.ABC):
    # Whether the platform wakes a stopped instance itself (Fly starts a stopped Machine on its next request): a
    # backend without it has an instance that should run but stopped (a clean exit) started again by reconcile.
    starts_on_demand = False
    # Whether the instances are processes of the machine the control plane runs on: `manage.py dev` stops them
    # when it stops, and reconciles them every few seconds, since no platform watches them.
    runs_instances_here = False
    # Whether teams are served under a certificate the platform issues (Fly's, on the router app: `domains`); such
    # a backend gives the client of that API (`certificates_client`).
    issues_certificates = False

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

    def inspect(self, instance: Instance) -> Observation:
        """What reconcile needs of one instance, read directly. Backends that see more (extra machines) override it."""
        state = self.observe(instance)
        return Observation(state, image=None if state is ObservedState.MISSING else self.running_image(instance))

    def inspect_many(self, instances: list[Instance]) -> dict[int, Observation]:
        """`inspect` for many instances by team id; backends with a bulk listing override it. What an
        observation says is proven, not a listing's lag: an instance is MISSING only once a direct read says so."""
        return {instance.team_id: self.inspect(instance) for instance in instances}

    def forget_machine(self, resources: dict) -> dict:
        """The resources to keep once the instance's machine is known to be gone, so provisioning makes a new one
        instead of waiting for the old. By default all of them."""
        return resources

    # --- optional: backends that cannot do these raise NotImplementedError, and callers skip them ---------

    def default_image_prefixes(self) -> list[str] | None:
        """What a deployed image must start with when the settings name nothing (CLOUDCTL_ALLOWED_IMAGE_PREFIXES);
        None when any image is safe to run with a team's token."""
        raise NotImplementedError

    def log_tail(self, instance: Instance, lines: int = 15) -> str:
        """The instance's last log lines, for the timeline of a crash."""
        raise NotImplementedError

    def certificates_client(self) -> FlyClient:
        """The client of the platform's certificates API (Fly's), where the router's wildcard certificate is
        requested and checked (`domains`); a backend whose teams need no certificate has none."""
        raise NotImplementedError

    def remove_machine(self, instance: Instance, machine_id: str) -> None:
        """Destroy one of the team's extra machines (`Observation.extra_machines`)."""
        raise NotImplementedError

    def secret_generation(self, instance: Instance) -> int | None:
        """The team token generation the platform holds as the instance's secret, for a backend that keeps the
        secret apart from the instance (a Fly app secret); `push_secret` brings it up to date."""
        raise NotImplementedError

    def push_secret(self, instance: Instance) -> dict:
        """Set the team's current token as the instance's secret and move the instance onto it; returns
        resources to save."""
        raise NotImplementedError

    def release_stale_leases(self, *, dry_run: bool = False) -> list[LeaseRecord]:
        """Release the platform leases whose holder died or that expired (with `dry_run`, only list them)."""
        raise NotImplementedError

    def orphans(self, live_team_ids: set[int]) -> list[str]:
        """The top-level resources named as ours (Fly apps) whose team is not among `live_team_ids`."""
        raise NotImplementedError

    def delete_orphan(self, name: str) -> None:
        """Delete one of `orphans`."""
        raise NotImplementedError

    def create_restore_volume(self, instance: Instance, restore_id: int) -> dict:
        """Create (idempotently) an empty volume for the team, apart from its live one and named by `restore_id`,
        that a point-in-time restore is written into; returns {"volume": where it is}."""
        raise NotImplementedError(f"point-in-time restore is not supported on the {type(self).__name__} backend yet")

    def restore_into_volume(self, instance: Instance, restore_id: int, database: str, source: RestoreSource) -> dict:
        """Write `database` restored from `source` into the restore's volume with Litestream's full integrity check,
        all or nothing (a rerun after a crash finishes the job, a finished one is left as it is); returns
        {"database": where it is}. BackendError when Litestream fails (its last line, safe to show)."""
        raise NotImplementedError(f"point-in-time restore is not supported on the {type(self).__name__} backend yet")

    def start_preview(self, instance: Instance, restore_id: int, preview_secret: str) -> dict:
        """Start (idempotently) a preview of the restore's volume: Datasette serving its databases read-only, with
        no credentials, no Litestream and none of the team's plugins, reachable only on the platform's private
        network, answering only requests that carry `preview_secret` (header `X-Cloudctl-Preview`). Returns
        {"url": its private base URL}. BackendError when it does not start."""
        raise NotImplementedError(f"a restore preview is not supported on the {type(self).__name__} backend yet")

    def stop_preview(self, instance: Instance, restore_id: int) -> None:
        """Stop the restore's preview if it runs (idempotent)."""
        raise NotImplementedError(f"a restore preview is not supported on the {type(self).__name__} backend yet")

    def swap_in_restore(self, instance: Instance, restore_id: int) -> dict:
        """Make the restore's volume the instance's live one, idempotently: stop the preview and the live instance
        (its Litestream's last sync), keep the live volume as the restore's previous one, and start the instance
        on the restored volume (databases missing from it are restored by the instance from their replicas, as
        on any new volume), healthy. Returns resources to save. A stopped instance is started: the swap is
        checked by serving."""
        raise NotImplementedError(f"swapping a restore in is not supported on the {type(self).__name__} backend yet")

    def swap_back_restore(self, instance: Instance, restore_id: int) -> dict:
        """Undo `swap_in_restore`, idempotently: stop the instance, keep the volume it ran on since the swap as
        the restore's replaced one, and start it again on the previous volume, healthy. Returns resources to
        save."""
        raise NotImplementedError(f"swapping a restore back is not supported on the {type(self).__name__} backend yet")

    def delete_restore_volumes(self, instance: Instance, restore_id: int) -> None:
        """Delete what the restore keeps apart from the live volume (its unused restored volume, or the previous
        or replaced one), idempotently; the live volume is never touched."""
        raise NotImplementedError(f"point-in-time restore is not supported on the {type(self).__name__} backend yet")

    def public_addresses(self) -> dict[str, list[str]]:
        """The public addresses of the teams' resources, by resource (Fly: the IPs of a team app). A team is
        reached only through the router: every address listed here is a way around it."""
        raise NotImplementedError
