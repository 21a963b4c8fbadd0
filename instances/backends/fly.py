"""The Fly backend: per team one app on its own private network, one volume, one Machine.

Every create is safe to retry. App names are deterministic (`<prefix>-team-<id>`), the volume is the one
named `data` in the team's app, and the Machine carries `cloudctl_team` and the launch id (saved in the
database before the create) in its metadata. An ambiguous failure (408, 5xx, dropped connection after
sending) is therefore resolved by looking, never by creating twice.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from flyapi import FlyAPIError, FlyClient, Lease, Machine

from .base import (BackendError, BackendUnavailable, LeaseLedger, LeaseRecord, MachineBackend, Observation,
                   ObservedState, Step)

if TYPE_CHECKING:
    from instances.specs import InstanceSpec

logger = logging.getLogger(__name__)

VOLUME_NAME = "data"
MOUNT_PATH = "/data"
INTERNAL_PORT = 8080
GONE_STATES = {"destroyed", "destroying", "replaced", "migrated"}
# flyctl launches an updated Machine only from these states; any other is updated with skip_launch.
LAUNCH_STATES = {"started", "starting", "failed"}
# Fly runs a Machine's service checks first this long after it starts: until then it has no check results.
HEALTH_GRACE_PERIOD = "20s"
# flyctl polls a Machine's checks every 1-2 s while it waits for a deploy to become healthy.
HEALTH_POLL_SECONDS = 1.0
GONE_VOLUME_STATES = {"scheduling_destroy", "pending_destroy", "destroyed"}
# A point-in-time restore's Machines, by metadata (the value is the restore's id): the restore Machine while it
# restores and serves the preview (named `restore_machine_name`), and a Machine a restore keeps apart (the live one
# it replaced, or its own after a swap back). Neither is the team's instance: reconcile never adopts one nor counts
# it as an extra. The Machine a restore replaced also carries REPLACED_MARK for good, so a swap back finds it.
RESTORE_MARK = "cloudctl_restore"
KEPT_MARK = "cloudctl_kept_by_restore"
REPLACED_MARK = "cloudctl_replaced_by_restore"
# What only a restore Machine's environment holds, dropped when it becomes the instance.
RESTORE_ENV = ("CLOUDCTL_RESTORE_DATABASE", "CLOUDCTL_RESTORE_TXID", "CLOUDCTL_PREVIEW_SECRET")
STATE_OF = {"started": ObservedState.RUNNING, "stopped": ObservedState.STOPPED, "suspended": ObservedState.STOPPED,
            "created": ObservedState.STOPPED, "failed": ObservedState.CRASHED}


def failure(error: FlyAPIError, doing: str) -> BackendError:
    """The backend error for a failed Fly call: BackendUnavailable (try the operation again later) when Fly's
    answer says so (`FlyAPIError.retryable`), else BackendError. The one place that decides, for every operation."""
    kind = BackendUnavailable if error.retryable else BackendError
    return kind(f"{doing}: {error}")


@contextmanager
def fly_errors(doing: str):
    """Raise a failed Fly call inside as `failure(error, doing)`."""
    try:
        yield
    except FlyAPIError as error:
        raise failure(error, doing) from None


def _step(name: str, run: Callable[..., dict]) -> Step:
    """A provisioning step whose failed Fly calls, even one it makes without `fly_errors`, come out as `failure`:
    provisioning tells a passing failure (BackendUnavailable, tried again by the reconciler) from a definite one."""
    def run_step(instance) -> dict:
        with fly_errors(f"provisioning step {name} failed"):
            return run(instance)
    return Step(name, run_step)


def make_client(api_url: str, api_token: str) -> FlyClient:
    return FlyClient(api_url, api_token)


def machine_config(spec: InstanceSpec, volume_id: str, launch_id: str) -> dict:
    """The team's Machine: scale to zero, restart only on failure (a clean exit stays stopped), no secret in env
    (the spec's secrets are the app's secrets: see `FlyBackend.ensure_secret`)."""
    return {
        "image": spec.image,
        "env": {**spec.env, "DATA_DIR": MOUNT_PATH, "PORT": str(INTERNAL_PORT)},
        "guest": dict(spec.guest),
        "mounts": [{"volume": volume_id, "path": MOUNT_PATH}],
        # datasette-scale-to-zero exits 0 when idle or at max age: `always` would restart it at once.
        "restart": {"policy": "on-failure", "max_retries": 3},
        "stop_config": {"signal": "SIGTERM", "timeout": "30s"},
        "metadata": {"cloudctl_team": str(spec.team_id), "cloudctl_launch_id": launch_id},
        "services": [{
            "protocol": "tcp",
            "internal_port": INTERNAL_PORT,
            "ports": [{"port": 443, "handlers": ["tls", "http"]},
                      {"port": 80, "handlers": ["http"], "force_https": True}],
            "concurrency": {"type": "requests", "soft_limit": 25, "hard_limit": 50},
            "autostart": True,
            "autostop": "stop",
            "min_machines_running": 0,
            "checks": [{"type": "http", "port": INTERNAL_PORT, "method": "GET", "path": spec.health_check_path,
                        "interval": "15s", "timeout": "5s", "grace_period": HEALTH_GRACE_PERIOD}],
        }],
    }


def restore_volume_name(restore_id: int) -> str:
    return f"restore_{restore_id}"


def restore_machine_name(app: str, restore_id: int) -> str:
    return f"{app}-restore-{restore_id}"


def set_apart(machine: Machine) -> bool:
    """Whether a Machine is a restore's (restoring, previewing, or kept apart), never the team's instance."""
    return RESTORE_MARK in machine.metadata or KEPT_MARK in machine.metadata


def restore_machine_config(spec: InstanceSpec, volume_id: str, restore_id: int, database: str, txid_hex: str) -> dict:
    """The Machine that restores `database` at `txid_hex` into the restore's volume, then serves the preview: the
    instance's image in restore mode, with the team's token from the app's secrets (the credentials it restores
    with are the team's own, confined to its prefix: no key is ever in a Machine config), no public service
    (the preview is reached on the private network only), and a top-level check that passes once the restore
    and its integrity check are done and Datasette serves the result."""
    return {
        "image": spec.image,
        "env": {**spec.env, "DATA_DIR": MOUNT_PATH, "PORT": str(INTERNAL_PORT),
                "CLOUDCTL_RESTORE_DATABASE": database, "CLOUDCTL_RESTORE_TXID": txid_hex},
        "guest": dict(spec.guest),
        "mounts": [{"volume": volume_id, "path": MOUNT_PATH}],
        # A failed restore stays down with its exit in the Machine's events: rerunning it is the control plane's.
        "restart": {"policy": "no"},
        "stop_config": {"signal": "SIGTERM", "timeout": "30s"},
        "metadata": {"cloudctl_team": str(spec.team_id), RESTORE_MARK: str(restore_id)},
        "checks": {"restored": {"type": "http", "port": INTERNAL_PORT, "method": "GET",
                                "path": spec.health_check_path, "interval": "15s", "timeout": "5s",
                                "grace_period": HEALTH_GRACE_PERIOD}},
    }


def kept_config(config: dict, restore_id: int) -> dict:
    """A Machine kept apart by a restore: stopped, with no service (Fly's proxy would start it on a request: it
    must not serve the team's name beside the instance) and no restore or preview environment."""
    kept = {key: value for key, value in config.items() if key != "services"}
    kept["env"] = {key: value for key, value in (config.get("env") or {}).items() if key not in RESTORE_ENV}
    kept["metadata"] = {**{key: value for key, value in (config.get("metadata") or {}).items()
                           if key != RESTORE_MARK}, KEPT_MARK: str(restore_id)}
    return kept


class LeaseLost(BackendUnavailable):
    """Our lease on a Machine could not be refreshed (it lapsed, or another actor holds it now): the operation
    stopped before changing anything more, and can be run again."""


class HeldLease:
    """A lease we hold on a Machine. flyctl takes a 13 s lease and refreshes it every few seconds for as long as
    it works on the Machine (reference section 8; flyctl PR #1728): `keep` refreshes it once a third of its TTL
    has gone by. Every wait under a lease goes in windows of that length (`wait`), so the lease never lapses
    while we work, even on a stop that takes its whole `stop_config.timeout` or a slow boot."""

    def __init__(self, client: FlyClient, app: str, machine_id: str, nonce: str, description: str, *, ttl: int,
                 ledger: LeaseLedger):
        self.client, self.app, self.machine_id, self.nonce = client, app, machine_id, nonce
        self.description, self.ttl, self.ledger = description, ttl, ledger
        self.refresh_every = ttl / 3
        self.refreshed_at = client.clock()

    def keep(self) -> None:
        """Refresh the lease if it is due; raises LeaseLost if Fly no longer has it as ours."""
        now = self.client.clock()
        if now - self.refreshed_at < self.refresh_every:
            return
        try:
            lease = self.client.acquire_lease(self.app, self.machine_id, self.ttl, self.description, nonce=self.nonce)
        except FlyAPIError as error:
            raise LeaseLost(f"the lease on machine {self.machine_id} of {self.app} could not be refreshed, so "
                            f"the operation stopped there: {error}") from None
        self.refreshed_at = now
        self.ledger.refresh(self.app, self.machine_id, self.nonce, _expiry(lease.expires_at))

    def wait(self, state: str, *, version: str | None = None, timeout: float) -> None:
        """`client.wait` for up to `timeout` seconds, in windows no longer than the refresh interval, keeping
        the lease between them."""
        deadline = self.client.clock() + timeout
        while True:
            self.keep()
            window = min(self.refresh_every, deadline - self.client.clock())
            try:
                self.client.wait(self.app, self.machine_id, state, version=version, timeout=max(window, 1))
                return
            except FlyAPIError as error:
                if error.http_status != 408 or self.client.clock() >= deadline:
                    raise


def _expiry(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


NEVER = datetime.max.replace(tzinfo=timezone.utc)
# How `FlyBackend.lease` describes its leases: the purpose (words: "secret update", "update to <image>"), then the
# holder.
LEASE_DESCRIPTION = "cloudctl {purpose} ({holder})"
_LEASE_HOLDER = re.compile(r"cloudctl .+ \((?P<holder>[^()\s]+)\)")
# How often an operation looks again at a lease someone else holds while it waits for it (see `FlyBackend.lease`).
LEASE_POLL_SECONDS = 1.0


def _unrecorded_lease(app: str, machine_id: str, lease) -> LeaseRecord | None:
    """A lease Fly holds for one of our runs that the ledger never recorded (the run died between Fly's grant and the
    ledger's write, or with the grant's answer in flight), named by its description; None for anyone else's."""
    match = _LEASE_HOLDER.fullmatch(lease.description or "") if lease is not None else None
    # Fly still holds it, so it has not expired by Fly's clock (ours may differ): only its holder tells.
    return LeaseRecord(app, machine_id, lease.nonce, match["holder"], NEVER) if match else None


class FlyBackend(MachineBackend):
    """Options (`get_backend` passes them from the CLOUDCTL_FLY_* settings): the Machines API's URL and token
    (or a ready `client`), the org, the app prefix (team apps are `<prefix>-team-<id>`), the domain teams are
    served under, the volume size, the start, visibility, health and lease timings; and the `ledger` that
    records the leases it takes."""

    starts_on_demand = True  # autostart: Fly's proxy starts a stopped Machine on its next request
    issues_certificates = True  # the router app's wildcard certificate, through Fly's certificates API

    def __init__(self, client: FlyClient | None = None, *, ledger: LeaseLedger, api_url: str = "",
                 api_token: str = "", org: str, app_prefix: str, teams_domain: str, volume_size_gb: int,
                 start_timeout: float, visibility_grace: float, lease_ttl: int, health_timeout: float,
                 spec_for: Callable[..., InstanceSpec] | None = None):
        super().__init__(spec_for=spec_for)
        self._client, self._api_url, self._api_token = client, api_url, api_token
        self._client_lock = threading.Lock()  # one client (and one rate limiter) for the fleet's threads
        self.ledger = ledger
        self.org, self.app_prefix, self.teams_domain = org, app_prefix, teams_domain
        self.volume_size_gb, self.lease_ttl = volume_size_gb, lease_ttl
        self.start_timeout, self.visibility_grace, self.health_timeout = start_timeout, visibility_grace, health_timeout

    @property
    def client(self) -> FlyClient:
        """Made on first use: what needs no API call (the image prefixes, the steps' names) needs no token."""
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self._api_url, self._api_token)
        return self._client

    def default_image_prefixes(self) -> list[str]:
        # The team image's own repository in Fly's registry, which only this organization's app can push to.
        return [f"registry.fly.io/{self.app_prefix}-team:"]

    def certificates_client(self) -> FlyClient:
        return self.client

    def app_name(self, team_id: int) -> str:
        return f"{self.app_prefix}-team-{team_id}"

    def team_of_app(self, name: str) -> int | None:
        """The team id an app name of ours encodes, or None for anyone else's app."""
        prefix = f"{self.app_prefix}-team-"
        suffix = name[len(prefix):]
        return int(suffix) if name.startswith(prefix) and suffix.isdigit() else None

    def provisioning_steps(self) -> list[Step]:
        return [_step("app", self.ensure_app), _step("secret", self.ensure_secret),
                _step("volume", self.ensure_volume), _step("launch", self.ensure_launch_id),
                _step("machine", self.ensure_machine), _step("started", self.ensure_started)]

    # --- steps ------------------------------------------------------------------------------------------

    def ensure_app(self, instance) -> dict:
        name = self.app_name(instance.team_id)
        if instance.resources.get("app") == name and self._app_owner(name) == "ours":
            return {}
        for _ in range(3):
            try:
                self.client.create_app(name, self.org, network=f"{name}-net")
                return {"app": name}
            except FlyAPIError as error:
                if not (error.ambiguous or error.name_taken):
                    raise failure(error, f"creating app {name} failed") from None
                owner = self._app_owner(name)
                if owner == "ours":  # made by this or an earlier attempt: adopt it
                    return {"app": name}
                if owner == "theirs":
                    raise BackendError(f"app name {name} is taken by another Fly organization") from None
        raise BackendError(f"could not create app {name} after 3 attempts")

    def ensure_secret(self, instance) -> dict:
        generation = instance.team.token_generation
        if instance.resources.get("token_generation") == generation:
            return {}
        with fly_errors(f"setting the token secret of {instance.resources['app']} failed"):
            version = self.client.set_secrets(instance.resources["app"], self.spec_for(instance).secrets)
        return {"secrets_version": version, "token_generation": generation}

    def ensure_volume(self, instance) -> dict:
        """The recorded volume while it exists (after a restore's swap it is the restored one, not `data`), else
        the one named `data`, created if missing."""
        app, spec = instance.resources["app"], self.spec_for(instance)
        with fly_errors(f"creating the volume of {app} failed"):
            return {"volume": self._named_volume(app, VOLUME_NAME, spec, recorded=instance.resources.get("volume"))}

    def ensure_launch_id(self, instance) -> dict:
        # Saved before the Machine is created, so an ambiguous create can be found by it afterwards.
        return {} if instance.resources.get("launch_id") else {"launch_id": uuid.uuid4().hex}

    def ensure_machine(self, instance) -> dict:
        app, launch_id = instance.resources["app"], instance.resources["launch_id"]
        with fly_errors(f"reading the machine of {app} failed"):
            machine = self._current_machine(instance)
        if machine is not None:
            with fly_errors(f"bringing the app's secrets into machine {machine.id} of {app} failed"):
                return {"machine": machine.id, "machine_version": machine.instance_id,
                        **self._bring_in_secrets(instance, machine)}
        spec = self.spec_for(instance)
        for _ in range(3):
            try:
                machine = self.client.create_machine(
                    app, name=f"{app}-main", region=spec.region,
                    config=machine_config(spec, instance.resources["volume"], launch_id),
                    min_secrets_version=instance.resources.get("secrets_version"))
                return {"machine": machine.id, "machine_version": machine.instance_id,
                        "machine_secrets_version": instance.resources.get("secrets_version")}
            except FlyAPIError as error:
                if error.capacity:
                    raise BackendError(f"no room for the machine on the volume's host: {error}") from None
                # Our deterministic name is taken, by an earlier create not yet visible to listings.
                if not (error.ambiguous or error.name_taken):
                    raise failure(error, f"creating the machine of {app} failed") from None
                with fly_errors(f"looking for the machine of {app} failed"):
                    machine = self._find_launched(app, launch_id)
                if machine is not None:
                    return {"machine": machine.id, "machine_version": machine.instance_id,
                            "machine_secrets_version": instance.resources.get("secrets_version")}
        raise BackendError(f"could not create the machine of {app} after 3 attempts")

    def ensure_started(self, instance) -> dict:
        """A stopped Machine is started under a lease, as every change to it is: a lease a dead run left on it (a
        restart killed mid-stop) is then released or waited out (`lease`) rather than failing the start with 409."""
        app, machine_id = instance.resources["app"], instance.resources["machine"]
        machine = self._visible_machine(app, machine_id)
        if machine is None:
            raise BackendError(f"machine {machine_id} of {app} is gone")
        with fly_errors(f"starting machine {machine_id} of {app} failed"):
            if machine.state in ("stopped", "suspended"):
                with self.lease(app, machine_id, "start") as held:
                    self.client.start(app, machine_id, nonce=held.nonce)
                    held.wait("started", timeout=self.start_timeout)
            else:
                self.client.wait(app, machine_id, "started", timeout=self.start_timeout)
        return {"url": f"https://{instance.team.slug}.{self.teams_domain}/"}

    # --- operations -------------------------------------------------------------------------------------

    def observe(self, instance) -> ObservedState:
        if not instance.resources.get("machine"):
            return ObservedState.MISSING
        with fly_errors(f"reading the machine of team {instance.team_id} failed"):
            machine = self._current_machine(instance)
        if machine is None:
            return ObservedState.MISSING
        return STATE_OF.get(machine.state, ObservedState.RUNNING)

    def observe_many(self, instances) -> dict:
        """One org-wide listing (1,000 Machines a page) instead of a read per Machine."""
        with fly_errors(f"listing the machines of {self.org} failed"):
            states = {machine.id: machine.state for machine in self.client.list_org_machines(self.org)}
        observed = {}
        for instance in instances:
            state = states.get(instance.resources.get("machine"))
            observed[instance.team_id] = (ObservedState.MISSING if state is None or state in GONE_STATES
                                          else STATE_OF.get(state, ObservedState.RUNNING))
        return observed

    def start(self, instance) -> dict:
        return self.ensure_started(instance)

    def stop(self, instance) -> None:
        app, machine_id = instance.resources["app"], instance.resources["machine"]
        with fly_errors(f"stopping machine {machine_id} of {app} failed"), self.lease(app, machine_id, "stop") as held:
            self._stop_held(held)

    def destroy(self, instance) -> None:
        """Machine, volume and app go (the app holds the team's secret); backups in S3 stay."""
        app = instance.resources.get("app") or self.app_name(instance.team_id)
        try:
            for machine in self.client.list_machines(app):
                if machine.state not in GONE_STATES:
                    self.client.destroy_machine(app, machine.id, force=True)
            self.client.delete_app(app, force=True)
        except FlyAPIError as error:
            if error.http_status != 404:
                raise failure(error, f"destroying {app} failed") from None

    def update(self, instance, image: str, *, before_change=None) -> dict:
        app, machine_id = instance.resources["app"], instance.resources["machine"]
        try:
            updated, machine = self._rewrite_machine(instance, f"update to {image}", image=image,
                                                     before_change=before_change, read_back=True)
            # Read back (the health checks' last read, for a launched Machine): Fly can silently revert a failed
            # update.
            if machine.image != image or machine.instance_id != updated.instance_id:
                raise BackendError(f"machine {machine_id} reverted to {machine.image} after the update to {image}")
        except FlyAPIError as error:
            # A stale version (412) is retryable: an earlier attempt's update whose answer was lost; reading
            # the Machine again tells whether it took.
            raise failure(error, f"updating machine {machine_id} of {app}") from None
        return {"machine_version": machine.instance_id}

    def running_image(self, instance) -> str:
        with fly_errors(f"reading the machine of team {instance.team_id} failed"):
            machine = self._current_machine(instance)
        if machine is None:
            raise BackendError(f"team {instance.team_id} has no machine")
        return machine.image or ""

    def push_secret(self, instance) -> dict:
        """Set the team's current token as the app secret and move the Machine onto it (a running one
        restarts; a stopped one picks it up at its next start)."""
        resources = self.ensure_secret(instance)
        if not resources:
            return {}
        instance.resources.update(resources)
        return {**resources, **self.ensure_machine(instance)}

    def log_tail(self, instance, lines: int = 15) -> str:
        return "(see `fly logs -a {}`)".format(instance.resources.get("app", "?"))

    @contextmanager
    def lease(self, app: str, machine_id: str, purpose: str):
        """A short lease (`lease_ttl`, 13 s as flyctl's) for one operation, recorded in the ledger with its nonce so
        `reconcile` can release it if we die. Yields a `HeldLease`: the operation refreshes it as it goes."""
        holder = self.ledger.new_holder()
        description = LEASE_DESCRIPTION.format(purpose=purpose, holder=holder)
        lease = self._acquire(app, machine_id, description)
        self.ledger.record(LeaseRecord(app, machine_id, lease.nonce, holder, _expiry(lease.expires_at)))
        try:
            yield HeldLease(self.client, app, machine_id, lease.nonce, description, ttl=self.lease_ttl,
                            ledger=self.ledger)
        finally:
            try:
                self.client.release_lease(app, machine_id, lease.nonce)
            except FlyAPIError as error:
                logger.warning("releasing the lease on %s/%s failed: %s", app, machine_id, error)
            self.ledger.forget(app, machine_id, lease.nonce)

    def _acquire(self, app: str, machine_id: str, description: str) -> Lease:
        """Fly's lease for `description`. One held by a run of ours that died (a killed worker) is released at once;
        one held by anyone else is waited out for one `lease_ttl`: a holder that died where we cannot tell (on
        another machine) no longer refreshes its lease, which lapses within that time, and a live operation is
        usually done by then. Raises the 409 if the Machine is still taken after that."""
        deadline = self.client.clock() + self.lease_ttl
        while True:
            try:
                return self.client.acquire_lease(app, machine_id, self.lease_ttl, description)
            except FlyAPIError as error:
                if not error.lease_held:
                    raise
                conflict = error
            held = self.client.get_lease(app, machine_id)
            if held is not None and held.description == description:
                return held  # ours: a retried acquire whose first answer was lost
            abandoned = self.ledger.lookup(app, machine_id) or _unrecorded_lease(app, machine_id, held)
            if abandoned is not None and self.release_if_abandoned(abandoned):
                continue
            if self.client.clock() >= deadline:
                raise conflict
            self.client.sleep(min(LEASE_POLL_SECONDS, deadline - self.client.clock()))

    def release_if_abandoned(self, lease: LeaseRecord) -> bool:
        """Release a lease we recorded if its holder died or it expired; False if its holder still runs."""
        if not self.ledger.is_abandoned(lease):
            return False
        self._release(lease)
        return True

    def release_stale_leases(self, *, dry_run: bool = False) -> list[LeaseRecord]:
        stale = self.ledger.abandoned()
        if not dry_run:
            for lease in stale:
                self._release(lease)
        return stale

    def _release(self, lease: LeaseRecord) -> None:
        try:
            self.client.release_lease(lease.app, lease.machine_id, lease.nonce)
        except FlyAPIError as error:
            if error.http_status not in (404, 409):  # already expired, or someone else's by now
                raise
        self.ledger.forget(lease.app, lease.machine_id, lease.nonce)

    # --- what reconcile reads and repairs -------------------------------------------------------------

    def inspect(self, instance) -> Observation:
        with fly_errors(f"reading the machines of team {instance.team_id} failed"):
            machine = self._current_machine(instance) if instance.resources.get("machine") else None
            if machine is None:
                return Observation(ObservedState.MISSING)
            tagged = self.client.list_machines(instance.resources["app"],
                                               metadata={"cloudctl_team": str(instance.team_id)})
            return self._observation(instance, machine,
                                     [m for m in tagged if m.state not in GONE_STATES and not set_apart(m)])

    def inspect_many(self, instances) -> dict[int, Observation]:
        """One org-wide listing (1,000 Machines a page) instead of reads per team. The listing is a point in time
        (docs/fly.md): a Machine made or changed moments ago may be missing from it, or one destroyed still in
        it, so a team with none listed is read directly, and an extra one is read before it counts."""
        with fly_errors(f"listing the machines of {self.org} failed"):
            machines_by_team: dict[int, list[Machine]] = {}
            for machine in self.client.list_org_machines(self.org):
                team_id = machine.metadata.get("cloudctl_team")
                if machine.state not in GONE_STATES and team_id and team_id.isdigit() and not set_apart(machine):
                    machines_by_team.setdefault(int(team_id), []).append(machine)
            observed = {}
            for instance in instances:
                live = machines_by_team.get(instance.team_id, [])
                if not live:
                    observed[instance.team_id] = self.inspect(instance)
                    continue
                recorded = next((m for m in live if m.id == instance.resources.get("machine")), live[0])
                observed[instance.team_id] = self._observation(instance, recorded, live)
        return observed

    def _observation(self, instance, machine: Machine, live: list[Machine]) -> Observation:
        """`machine` is the team's own (adopted when the database recorded another, saved with the next repair);
        the other `live` ones that a direct read still finds are extras."""
        instance.resources["machine"] = machine.id
        extras = tuple(m.id for m in live if m.id != machine.id and self._still_there(m))
        return Observation(STATE_OF.get(machine.state, ObservedState.RUNNING), image=machine.image,
                           extra_machines=extras)

    def _still_there(self, machine: Machine) -> bool:
        """Whether a Machine a (lagging) listing shows is still live, by reading it."""
        try:
            return self.client.get_machine(machine.app_name, machine.id).state not in GONE_STATES
        except FlyAPIError as error:
            if error.http_status == 404:
                return False
            raise

    def remove_machine(self, instance, machine_id: str) -> None:
        app = instance.resources.get("app") or self.app_name(instance.team_id)
        with fly_errors(f"destroying machine {machine_id} of {app} failed"):
            self.client.destroy_machine(app, machine_id, force=True)

    def forget_machine(self, resources: dict) -> dict:
        # The launch id goes too: the new Machine is a new launch.
        return {key: value for key, value in resources.items() if key not in ("machine", "launch_id")}

    def secret_generation(self, instance) -> int | None:
        return instance.resources.get("token_generation")

    def orphans(self, live_team_ids: set[int]) -> list[str]:
        with fly_errors(f"listing the apps of {self.org} failed"):
            apps = self.client.list_apps(self.org)
        return [app.name for app in apps
                if (team_id := self.team_of_app(app.name)) is not None and team_id not in live_team_ids]

    def delete_orphan(self, name: str) -> None:
        with fly_errors(f"deleting app {name} failed"):
            self.client.delete_app(name, force=True)

    def public_addresses(self) -> dict[str, list[str]]:
        # Apps made through the Machines API have no IPs: one found was allocated by hand (a Flycast address,
        # private to the org's network, is the large-upload path, not a public one).
        with fly_errors(f"listing the apps of {self.org} failed"):
            apps = [app.name for app in self.client.list_apps(self.org) if self.team_of_app(app.name) is not None]
        exposed = {}
        for app in apps:
            with fly_errors(f"listing the IPs of {app} failed"):
                public = [address.ip for address in self.client.list_ip_assignments(app) if not address.private]
            if public:
                exposed[app] = public
        return exposed

    # --- point-in-time restore ---------------------------------------------------------------------------
    # The control plane cannot write a Fly volume: a restore Machine in the team's app, on the restore's new
    # volume, restores with the team's own token and then serves the preview; the swap makes it the instance
    # (the live Machine is stopped and kept apart with its volume), the swap back the other way round. A
    # Machine's volume never changes (Fly cannot remount one): the instance moves between Machines.

    def create_restore_volume(self, instance, restore_id: int) -> dict:
        app, spec = instance.resources["app"], self.spec_for(instance)
        name = restore_volume_name(restore_id)
        with fly_errors(f"creating the restore volume {name} of {app} failed"):
            return {"volume": self._named_volume(app, name, spec)}

    def restore_into_volume(self, instance, restore_id: int, database: str, source) -> dict:
        """`source`'s read-only keys are not used here: the restore Machine restores with the team's token
        (`source.txid_hex` and the database are all it takes)."""
        app = instance.resources["app"]
        with fly_errors(f"restoring {database} into the restore volume of {app} failed"):
            volume = self._restore_volume(app, restore_id)
            machine = self._restore_machine(app, restore_id) or self._create_restore_machine(
                instance, restore_id, volume, database, source.txid_hex)
            self._bring_up(instance, machine.id, f"restore {restore_id}", lambda current: None,
                           still_going=BackendUnavailable)
        return {"database": f"{volume.id}:{MOUNT_PATH}/{database}"}

    def start_preview(self, instance, restore_id: int, preview_secret: str) -> dict:
        """The restore Machine serves the preview. The secret goes in its config's env (CLOUDCTL_PREVIEW_SECRET):
        readable only with the org's Fly token, never an app secret (the team's live Machine never gets it), never
        logged (the Fly client logs no body); the swap drops it."""
        app = instance.resources["app"]

        def with_secret(machine: Machine) -> dict | None:
            env = machine.config.get("env") or {}
            if env.get("CLOUDCTL_PREVIEW_SECRET") == preview_secret:
                return None
            return {**machine.config, "env": {**env, "CLOUDCTL_PREVIEW_SECRET": preview_secret}}

        with fly_errors(f"starting the preview of restore {restore_id} in {app} failed"):
            machine = self._existing_restore_machine(app, restore_id)
            self._bring_up(instance, machine.id, f"preview of restore {restore_id}", with_secret)
        return {"url": f"http://{machine.id}.vm.{app}.internal:{INTERNAL_PORT}"}

    def stop_preview(self, instance, restore_id: int) -> None:
        app = instance.resources["app"]
        with fly_errors(f"stopping the preview of restore {restore_id} in {app} failed"):
            machine = self._restore_machine(app, restore_id)
            if machine is not None and machine.id != instance.resources.get("machine"):
                with self.lease(app, machine.id, f"stop of restore {restore_id}") as held:
                    self._stop_held(held)

    def swap_in_restore(self, instance, restore_id: int) -> dict:
        app = instance.resources["app"]
        with fly_errors(f"swapping restore {restore_id} into {app} failed"):
            restored = self._existing_restore_machine(app, restore_id)
            replaced = instance.resources["machine"]
            if replaced != restored.id:
                self._keep_apart(instance, replaced, restore_id, replaced=True)
            return self._make_live(instance, restored.id, restore_id)

    def swap_back_restore(self, instance, restore_id: int) -> dict:
        app = instance.resources["app"]
        with fly_errors(f"swapping restore {restore_id} of {app} back failed"):
            restored = self._existing_restore_machine(app, restore_id)
            previous = [m for m in self.client.list_machines(app, metadata={REPLACED_MARK: str(restore_id)})
                        if m.state not in GONE_STATES and m.id != restored.id]
            if not previous:
                raise BackendError(f"the machine restore {restore_id} replaced in {app} is gone")
            self._keep_apart(instance, restored.id, restore_id, replaced=False)
            return self._make_live(instance, previous[0].id, restore_id)

    def delete_restore_volumes(self, instance, restore_id: int) -> None:
        """Destroy the Machines the restore keeps apart (its own, or the one it replaced), then delete their
        volumes, and its own volume if no other Machine mounts it (a later restore may keep this one's Machine
        apart, volume and all, for its own swap back). Destroyed Machines are read too (`include_deleted`): a run
        that died between the destroy and the delete still finds which volume to delete."""
        app, live_machine, live_volume = (instance.resources["app"], instance.resources.get("machine"),
                                          instance.resources.get("volume"))
        mark = str(restore_id)
        with fly_errors(f"deleting the volumes of restore {restore_id} in {app} failed"):
            machines = self.client.list_machines(app, include_deleted=True)
            ours = [m for m in machines
                    if m.id != live_machine and mark in (m.metadata.get(RESTORE_MARK), m.metadata.get(KEPT_MARK))]
            volumes = {mount["volume"] for m in ours for mount in m.config.get("mounts") or []}
            mounted_elsewhere = {mount["volume"] for m in machines
                                 if m.id not in {o.id for o in ours} and m.state != "destroyed"
                                 for mount in m.config.get("mounts") or []}
            volumes |= {v.id for v in self.client.list_volumes(app)
                        if v.name == restore_volume_name(restore_id) and v.id not in mounted_elsewhere}
            for machine in ours:
                if machine.state != "destroyed":
                    if machine.state != "destroying":
                        self.client.destroy_machine(app, machine.id, force=True)
                    self.client.wait(app, machine.id, "destroyed", timeout=self.start_timeout)
            for volume_id in volumes - {live_volume}:
                try:
                    if self.client.get_volume(app, volume_id).state not in GONE_VOLUME_STATES:
                        self.client.delete_volume(app, volume_id)
                except FlyAPIError as error:
                    if error.http_status != 404:
                        raise

    def _named_volume(self, app: str, name: str, spec: InstanceSpec, *, recorded: str | None = None) -> str:
        """The id of the app's `recorded` volume if it exists, else of its volume named `name`, created if there
        is none. Volume names are not unique, so an ambiguous create is resolved by looking for the name again."""
        for _ in range(3):
            volumes = [v for v in self.client.list_volumes(app) if v.state not in GONE_VOLUME_STATES]
            existing = [v for v in volumes if v.id == recorded] or [v for v in volumes if v.name == name]
            if existing:
                return existing[0].id
            try:
                return self.client.create_volume(app, name, spec.region, self.volume_size_gb,
                                                 compute={**spec.guest}).id
            except FlyAPIError as error:
                if not error.ambiguous:
                    raise
        raise BackendError(f"could not create volume {name} of {app} after 3 attempts")

    def _restore_volume(self, app: str, restore_id: int):
        name = restore_volume_name(restore_id)
        found = [v for v in self.client.list_volumes(app) if v.name == name and v.state not in GONE_VOLUME_STATES]
        if not found:
            raise BackendError(f"restore volume {name} of {app} is gone")
        return found[0]

    def _restore_machine(self, app: str, restore_id: int) -> Machine | None:
        name = restore_machine_name(app, restore_id)
        found = [m for m in self.client.list_machines(app) if m.name == name and m.state not in GONE_STATES]
        return found[0] if found else None

    def _existing_restore_machine(self, app: str, restore_id: int) -> Machine:
        machine = self._restore_machine(app, restore_id)
        if machine is None:
            raise BackendError(f"the machine of restore {restore_id} in {app} is gone")
        return machine

    def _create_restore_machine(self, instance, restore_id: int, volume, database: str, txid_hex: str) -> Machine:
        """Created once: its name is the restore's, so an ambiguous create (or one taken by a run that died) is
        found by name, within the visibility grace period."""
        app, spec = instance.resources["app"], self.spec_for(instance)
        name = restore_machine_name(app, restore_id)
        try:
            return self.client.create_machine(
                app, name=name, region=volume.region,
                config=restore_machine_config(spec, volume.id, restore_id, database, txid_hex),
                min_secrets_version=instance.resources.get("secrets_version"))
        except FlyAPIError as error:
            if not (error.ambiguous or error.name_taken):
                raise
        deadline = self.client.clock() + self.visibility_grace
        while (machine := self._restore_machine(app, restore_id)) is None:
            if self.client.clock() >= deadline:
                raise BackendUnavailable(f"the machine of restore {restore_id} in {app} is not visible yet")
            self.client.sleep(0.5)
        return machine

    def _bring_up(self, instance, machine_id: str, purpose: str, configure: Callable[[Machine], dict | None], *,
                  still_going: type[BackendError] = BackendError) -> Machine:
        """Under a lease: give the Machine the config `configure` returns (None: it has it already), run it and
        wait until its checks pass. Returns it as last read."""
        app = instance.resources["app"]
        with self.lease(app, machine_id, purpose) as held:
            machine = self.client.get_machine(app, machine_id)
            config = configure(machine)
            if config is not None:
                machine = self.client.update_machine(
                    app, machine_id, config=config, current_version=machine.instance_id,
                    min_secrets_version=instance.resources.get("secrets_version"), nonce=held.nonce)
            elif machine.state in ("stopped", "suspended", "created"):
                self.client.start(app, machine_id, nonce=held.nonce)
            held.wait("started", version=machine.instance_id, timeout=self.start_timeout)
            return self._wait_healthy(held, still_going=still_going)

    def _keep_apart(self, instance, machine_id: str, restore_id: int, *, replaced: bool) -> None:
        """Stop the Machine (its Litestream's last sync) and give it the kept config; `replaced` marks the live
        Machine a swap in replaced, for the swap back to find."""
        app = instance.resources["app"]
        with self.lease(app, machine_id, f"keep apart for restore {restore_id}") as held:
            machine = self._stop_held(held)
            if machine.metadata.get(KEPT_MARK) != str(restore_id):
                config = kept_config(dict(machine.config), restore_id)
                if replaced:
                    config["metadata"][REPLACED_MARK] = str(restore_id)
                self.client.update_machine(app, machine_id, config=config, current_version=machine.instance_id,
                                           skip_launch=True, nonce=held.nonce)

    def _make_live(self, instance, machine_id: str, restore_id: int) -> dict:
        """The Machine becomes the instance: the live config on its own volume (a restore Machine's or a kept
        one's is replaced, one live already is left as it is), running and healthy. Returns the resources."""
        spec = self.spec_for(instance)
        launch_id = f"restore-{restore_id}"

        def live(machine: Machine) -> dict | None:
            nonlocal launch_id
            launch_id = machine.metadata.get("cloudctl_launch_id") or launch_id
            if not set_apart(machine):
                return None
            volume = machine.config["mounts"][0]["volume"]
            config = machine_config(spec, volume, launch_id)
            replaced = machine.metadata.get(REPLACED_MARK)
            if replaced:
                config["metadata"][REPLACED_MARK] = replaced
            return config

        machine = self._bring_up(instance, machine_id, f"swap of restore {restore_id}", live)
        return {"machine": machine.id, "volume": machine.config["mounts"][0]["volume"],
                "machine_version": machine.instance_id, "launch_id": launch_id,
                "machine_secrets_version": instance.resources.get("secrets_version")}

    def _stop_held(self, held: HeldLease) -> Machine:
        """Stop the leased Machine if it runs, and wait until it is down; returns it as read afterwards."""
        machine = self.client.get_machine(held.app, held.machine_id)
        if machine.state == "started":
            self.client.stop(held.app, held.machine_id, nonce=held.nonce)
        # One already `stopping` (a run killed after asking for the stop) is waited for too: the start that
        # follows a stop waits for `started`, which a stopping Machine never reaches.
        if machine.state in ("started", "stopping"):
            held.wait("stopped", version=machine.instance_id, timeout=self.start_timeout)
            machine = self.client.get_machine(held.app, held.machine_id)
        return machine

    # --- internals --------------------------------------------------------------------------------------

    def _rewrite_machine(self, instance, purpose: str, *, image: str | None = None,
                         before_change: Callable[[str], None] | None = None,
                         read_back: bool = False) -> tuple[Machine, Machine]:
        """Update the Machine's full config under a lease held (and refreshed) to the end. As flyctl decides
        `skip_launch`, only a Machine that is started, starting or failed is launched on the new version: one
        stopped, suspended, or on its way down (autostop can stop it between our read and our write) stays down.
        A Machine already on `image` is left as it is (an interrupted run updated it). Every update carries
        the app's known secrets version as `min_secrets_version`, as flyctl's do: without it the host may boot
        the Machine on an older version that has reached it first (a revoked token).
        Returns the Machine as updated and, with `read_back`, as read afterwards: once it passed the health
        gate if it was launched (else the updated one again)."""
        app, machine_id = instance.resources["app"], instance.resources["machine"]
        with self.lease(app, machine_id, purpose) as held:
            machine = self.client.get_machine(app, machine_id)
            launch = machine.state in LAUNCH_STATES
            if image and machine.image == image:
                updated = machine
            else:
                if before_change:
                    before_change(machine.image or "")
                held.keep()
                updated = self.client.update_machine(
                    app, machine_id, config={**machine.config, **({"image": image} if image else {})},
                    current_version=machine.instance_id, skip_launch=not launch,
                    min_secrets_version=instance.resources.get("secrets_version"), nonce=held.nonce)
            if launch:
                held.wait("started", version=updated.instance_id, timeout=self.start_timeout)
            if not read_back:
                return updated, updated
            return updated, self._wait_healthy(held) if launch else self.client.get_machine(app, machine_id)

    def _bring_in_secrets(self, instance, machine: Machine) -> dict:
        """Fly hands a Machine only the secrets of its create or last update: after the app's secret changed
        (a rotated token), an update with `min_secrets_version` brings the new one in (a start would not)."""
        wanted = instance.resources.get("secrets_version")
        if wanted is None or instance.resources.get("machine_secrets_version") == wanted:
            return {}
        instance.resources["machine"] = machine.id
        updated, _ = self._rewrite_machine(instance, "secret update")
        return {"machine_version": updated.instance_id, "machine_secrets_version": wanted}

    def _wait_healthy(self, held: HeldLease, *, still_going: type[BackendError] = BackendError) -> Machine:
        """Started is not ready: every configured check must have a result and pass, within the timeout, polled
        every second as flyctl's `WaitForHealthchecksToPass` does (internal/machine/leasable_machine.go). A
        freshly started Machine has no results at all (flyctl PR #4952): that is "not yet", never a pass.
        Returns the Machine as last read. The lease is kept meanwhile. A Machine still started with checks not
        passing at the deadline raises `still_going` (a restore still at work: BackendUnavailable)."""
        app, machine_id = held.app, held.machine_id
        deadline = self.client.clock() + self.health_timeout
        while True:
            held.keep()
            machine = self.client.get_machine(app, machine_id)
            checks = machine.check_statuses
            configured = machine.configured_check_count
            if (machine.state == "started" and len(checks) >= configured
                    and all(status == "passing" for status, _ in checks.values())):
                return machine
            if machine.state == "failed" or self.client.clock() >= deadline:
                failing = "; ".join(f"{name}: {status} ({output})" for name, (status, output) in checks.items()
                                    if status != "passing")
                if not failing:
                    failing = (f"{configured - len(checks)} of {configured} checks without a result"
                               if machine.state == "started" else f"machine is {machine.state}")
                kind = still_going if machine.state == "started" else BackendError
                raise kind(f"machine {machine_id} of {app} is not healthy after {self.health_timeout}s: {failing}")
            self.client.sleep(HEALTH_POLL_SECONDS)

    def _app_owner(self, name: str) -> str:
        """"ours" (in our org), "theirs" (another org) or "none"."""
        try:
            app = self.client.get_app(name)
        except FlyAPIError as error:
            if error.http_status == 403:
                return "theirs"
            if error.http_status == 404:
                return "none"
            raise failure(error, f"looking up app {name} failed") from None
        return "ours" if app.org_slug in (None, self.org) else "theirs"

    def _current_machine(self, instance) -> Machine | None:
        """The team's live Machine: the recorded one, else any tagged with the team (adopted)."""
        app = instance.resources["app"]
        recorded = instance.resources.get("machine")
        if recorded:
            machine = self._visible_machine(app, recorded)
            if machine is not None and machine.state not in GONE_STATES:
                return machine
        tagged = [m for m in self.client.list_machines(app, metadata={"cloudctl_team": str(instance.team_id)})
                  if m.state not in GONE_STATES and not set_apart(m)]
        return tagged[0] if tagged else None

    def _visible_machine(self, app: str, machine_id: str) -> Machine | None:
        """The Machine, or None once it has answered 404 for the whole visibility grace period (a Machine
        just created can answer 404 for a few seconds: that is not "gone")."""
        deadline = self.client.clock() + self.visibility_grace
        while True:
            try:
                return self.client.get_machine(app, machine_id)
            except FlyAPIError as error:
                if error.http_status != 404:
                    raise failure(error, f"reading machine {machine_id} failed") from None
                if self.client.clock() >= deadline:
                    return None
            self.client.sleep(0.5)

    def _find_launched(self, app: str, launch_id: str) -> Machine | None:
        """After an ambiguous create: look for the launch id until it shows up or the grace period ends
        (a Machine just created can be missing from listings for a few seconds)."""
        deadline = self.client.clock() + self.visibility_grace
        while True:
            found = [m for m in self.client.list_machines(app, metadata={"cloudctl_launch_id": launch_id})
                     if m.state not in GONE_STATES]
            if found or self.client.clock() >= deadline:
                return found[0] if found else None
            self.client.sleep(0.5)
