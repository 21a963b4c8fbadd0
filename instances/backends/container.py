"""The container backend: each team's instance is a podman container of the instance image on this host.

For operators of one host (a VPS) who run untrusted tenants: per team a named volume of its own (mounted at /data,
nothing else of the host), a container named after the team (`<prefix>team-<id>`) with its team id in a label (so
observe, inspect and orphans read podman's own state), memory, CPU and process limits, a read-only root file
system, every capability dropped, no new privileges, an unprivileged user, its own network namespace
(slirp4netns: no bridge shared with other teams) and its port published on 127.0.0.1 only, for the router in front.

The team's secrets (its token, its routing secret) go in through the environment of the podman process (`--env
NAME`, no value): never on a command line, in a label or in the image. The instance reaches the control plane's
private API and S3 (on one host they often listen on 127.0.0.1) through slirp4netns's host loopback address,
10.0.2.2, and an egress firewall loaded into the container's network namespace by an OCI hook at every start,
before anything runs in it (`container_firewall`; the tenant, without CAP_NET_ADMIN, cannot change it) lets it
reach only those two ports of the host: not other teams' published ports, not the host's other services, nor any
private or link-local address.

Every start makes the container anew from the instance's spec (its current token, its image) on the same volume
and port, so a restart after a token rotation runs with the new token. Requires rootful podman (the hook enters
the container's namespace with nsenter).

Point-in-time restore (`host.HostBackend`'s, as the local backend's): a restore's directory is a podman volume of
its own (`<prefix>team-<id>-restore-<restore id>`), beside the team's volume in podman's storage, so a swap moves
directories by rename: its restored `data` becomes the team volume's mount point, the one it replaced is kept as
`previous`. Litestream restores into it from this host (the control plane's own binary, read-only credentials).
The preview is a container of the instance image (`<prefix>team-<id>-preview-<restore id>`) on the restored
`data` mounted read-only, with no token, no credentials and none of the team's code, its firewall letting it reach
nothing of the host nor of any private network, published on 127.0.0.1 only; its secret goes in through podman's environment, as the team's secrets do.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from . import container_firewall as firewall
from .base import BackendError, ObservedState, Observation
from .host import HostBackend, free_port
from .replica_restore import host_litestream

REPO = Path(__file__).resolve().parents[2]
# The URLs of the spec the instance calls itself: the private API and the S3 endpoint. A loopback host in them is
# the control plane's own machine, which the container reaches at slirp4netns's host address.
CONTROL_PLANE_URL_VARIABLES = ("CLOUDCTL_URL", "CLOUDCTL_S3_ENDPOINT")
HOST_LOOPBACK = "10.0.2.2"  # slirp4netns: the host's 127.0.0.1, seen from the container (allow_host_loopback)
NETWORK = "slirp4netns:allow_host_loopback=true,enable_ipv6=false"
CONTAINER_PORT = 8080  # the image's PORT
PUBLISH_ADDRESS = "127.0.0.1"  # the only address a team's port is published on: the router's side, never the world
DATA_DIR = "/data"  # the image's VOLUME
TEAM_LABEL = "cloudctl.team"
PREFIX_LABEL = "cloudctl.prefix"  # which backend's containers (its name prefix): observe and orphans look at these only
GENERATION_LABEL = "cloudctl.token-generation"
# The image reference the container was made from, as given (podman's own name for it adds `:latest` to an untagged
# one, which would never equal the instance's recorded image).
IMAGE_LABEL = "cloudctl.image"
# On a restore's preview container and volume instead of TEAM_LABEL (which names the team's one container and volume):
# `<team id>/<restore id>`.
PREVIEW_LABEL = "cloudctl.preview-of"
RESTORE_LABEL = "cloudctl.restore-of"
# Set on a container made to run: one an update left created but never started (killed in between) should run.
START_LABEL = "cloudctl.start"
STOP_TIMEOUT_SECONDS = 20
# Exit codes of a clean stop: 0 (max age, idle, Litestream's own stop) and 143 (SIGTERM).
CLEAN_EXIT_CODES = (0, 143)
STATES = {"running": ObservedState.RUNNING, "paused": ObservedState.RUNNING, "stopping": ObservedState.RUNNING,
          "created": ObservedState.STOPPED, "configured": ObservedState.STOPPED,
          "initialized": ObservedState.STOPPED, "stopped": ObservedState.STOPPED}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class ContainerBackend(HostBackend):
    """Options (`instances.machines` passes them from the settings, CLOUDCTL_CONTAINER_*): `podman`, the command;
    `containers_conf`, the podman configuration it runs with (CONTAINERS_CONF; by default the repository's
    podman/containers.conf: runc, no default ulimits); `image_repository`, what a deployed image must start with
    unless the settings say otherwise; `memory`, `cpus`, `pids_limit`, each container's limits; `user`, who the
    instance runs as inside the container; `name_prefix`, before every container and volume name;
    `state_dir`, where the per-team lock files and the firewall hook's configuration go; `health_timeout`, how long
    a started instance may take to answer HTTP."""

    def __init__(self, *, podman: str = "podman", containers_conf: str | Path = REPO / "podman" / "containers.conf",
                 image_repository: str = "localhost/cloudctl-instance", memory: str = "512m", cpus: str = "1",
                 pids_limit: int = 256, user: str = "65534:65534", name_prefix: str = "cloudctl-",
                 state_dir: str | Path, health_timeout: float = 120,
                 spec_for=None):
        super().__init__(spec_for=spec_for)
        self.podman_command = podman
        self.containers_conf = str(containers_conf)
        self.image_repository = image_repository
        self.memory, self.cpus, self.pids_limit, self.user = memory, str(cpus), int(pids_limit), user
        self.name_prefix = name_prefix
        self.state_dir = Path(state_dir)
        self.health_timeout = health_timeout

    def default_image_prefixes(self) -> list[str]:
        # Any image run here gets a team's token: only the instance image's repository's tags unless the settings
        # say more (with its `:`, so `...-instance-evil` is no match).
        return [f"{self.image_repository}:"]

    # --- names ------------------------------------------------------------------------------------------

    def container_name(self, instance) -> str:
        return f"{self.name_prefix}team-{instance.team_id}"

    def volume_name(self, instance) -> str:
        return f"{self.container_name(instance)}-data"

    def restore_volume_name(self, instance, restore_id: int) -> str:
        return f"{self.container_name(instance)}-restore-{int(restore_id)}"

    def preview_container_name(self, instance, restore_id: int) -> str:
        return f"{self.container_name(instance)}-preview-{int(restore_id)}"

    # --- steps ------------------------------------------------------------------------------------------

    def ensure_volume(self, instance) -> dict:
        name = self.volume_name(instance)
        created = self._podman("volume", "create", "--label", f"{TEAM_LABEL}={instance.team_id}",
                               "--label", f"{PREFIX_LABEL}={self.name_prefix}", name, check=False)
        # A create refused because the volume exists (an earlier run's, or another run's just now) is the step done.
        if created.returncode != 0 and self._podman("volume", "exists", name, check=False).returncode != 0:
            raise BackendError(f"creating volume {name} failed: {created.stderr.strip()}")
        return {"volume": name}

    def ensure_running(self, instance) -> dict:
        """Start the instance unless its container already runs; never two containers for one team (the name is
        the team's, and one lock per team on this host orders the starts)."""
        with self.team_lock(instance):
            container = self._inspect(instance)
            if container is not None and container["State"]["Running"]:
                bindings = container["HostConfig"]["PortBindings"][f"{CONTAINER_PORT}/tcp"]
                return self._resources(container["Id"], int(bindings[0]["HostPort"]))
            return self._create(instance, self.team_port(instance), image=self.spec_for(instance).image, start=True,
                                replacing=container is not None)

    def exit_watch(self, instance):
        next_look = 0.0

        def exited() -> bool:
            # Asking podman costs a process: whether the container still runs is looked at once a second.
            nonlocal next_look
            if time.monotonic() < next_look:
                return False
            next_look = time.monotonic() + 1
            container = self._inspect(instance)
            return container is None or not container["State"]["Running"]

        return exited

    def start_lock_path(self, instance) -> Path:
        return self.state_dir / f"{self.container_name(instance)}.lock"

    # --- operations -------------------------------------------------------------------------------------

    def observe(self, instance) -> ObservedState:
        return self._state(self._inspect(instance))

    def observe_many(self, instances: list) -> dict[int, ObservedState]:
        return {team_id: observation.state for team_id, observation in self.inspect_many(instances).items()}

    def inspect(self, instance) -> Observation:
        return self._observation(self._inspect(instance))

    def inspect_many(self, instances: list) -> dict[int, Observation]:
        """One `podman ps -a` for all of them: podman's own state, which has no lag to wait out."""
        listed = {}
        for container in self._list_containers():
            try:
                listed[int(container["Labels"][TEAM_LABEL])] = container
            except (KeyError, TypeError, ValueError):
                continue
        observations = {}
        for instance in instances:
            entry = listed.get(instance.team_id)
            if entry is None or self.container_name(instance) not in entry.get("Names", []):
                observations[instance.team_id] = Observation(ObservedState.MISSING)
                continue
            state = self._state_of(entry["State"], entry.get("ExitCode", 0))
            observations[instance.team_id] = Observation(state, image=entry["Labels"].get(IMAGE_LABEL))
        return observations

    def stop(self, instance) -> None:
        self._podman("stop", "--time", str(STOP_TIMEOUT_SECONDS), self.container_name(instance), check=False,
                     timeout=STOP_TIMEOUT_SECONDS + 30)

    def destroy(self, instance) -> None:
        self._remove_team(self.container_name(instance))

    def update(self, instance, image: str, *, before_change=None) -> dict:
        """A running instance is made anew on `image` and must answer its health check, as a crashed one (it should
        run: an earlier start or update failed) or one an interrupted update left created but not started; a
        stopped one is made anew on `image` without starting. The image replaced is the container's own."""
        with self.team_lock(instance):
            container = self._inspect(instance)
            current = self._image(container) or instance.image
            if current != image and before_change:
                before_change(current)
            state = self._state(container)
            should_run = state in (ObservedState.RUNNING, ObservedState.CRASHED) or (
                container is not None and container["State"]["Status"] in ("created", "configured", "initialized")
                and container["Config"]["Labels"].get(START_LABEL) == "yes")
            instance.image = image
            if state is ObservedState.RUNNING and current == image:
                self.wait_healthy(instance)
                return {}
            if container is None:
                return {}  # nothing to move: provisioning makes it on the instance's image
            port = instance.resources.get("port") or free_port()
            resources = self._create(instance, port, image=image, start=should_run, replacing=True)
        if should_run:
            instance.resources.update(resources)
            self.wait_healthy(instance)
        running = self.running_image(instance)
        if running != image:
            raise BackendError(f"its container runs {running} instead of {image}: another start came first")
        return resources

    def running_image(self, instance) -> str | None:
        """The image of the team's container (running, or the one it starts on); None when there is none."""
        container = self._inspect(instance)
        return self._image(container)

    def log_tail(self, instance, lines: int = 15) -> str:
        logs = self._podman("logs", "--tail", str(lines), self.container_name(instance), check=False)
        return (logs.stdout + logs.stderr).strip() or "(no log)"

    def secret_generation(self, instance) -> int | None:
        """The token generation the team's container was made with (a label: the number only, never the token)."""
        container = self._inspect(instance)
        if container is None:
            return None
        generation = container["Config"]["Labels"].get(GENERATION_LABEL)
        return int(generation) if generation else None

    def push_secret(self, instance) -> dict:
        """Make the container anew with the current token: started if it ran, else left stopped on it."""
        with self.team_lock(instance):
            container = self._inspect(instance)
            if container is None:
                return {}
            running = container["State"]["Running"]
            resources = self._create(instance, instance.resources.get("port") or free_port(),
                                     image=self._image(container), start=running, replacing=True)
        if running:
            instance.resources.update(resources)
            self.wait_healthy(instance)
        return resources

    def orphans(self, live_team_ids: set[int]) -> list[str]:
        """The teams' containers and volumes of this backend (its name prefix) whose team is gone, by team name."""
        labelled = [*self._list_containers(), *self._list_volumes()]
        teams = set()
        for entry in labelled:
            try:
                teams.add(int(entry["Labels"][TEAM_LABEL]))
            except (KeyError, TypeError, ValueError):
                continue
        return [f"{self.name_prefix}team-{team_id}" for team_id in sorted(teams - live_team_ids)]

    def delete_orphan(self, name: str) -> None:
        self._remove_team(name)

    # --- point-in-time restore (the shared steps are host.HostBackend's) ---------------------------------

    def live_volume_path(self, instance) -> Path:
        self.ensure_volume(instance)
        return self._mount_point(self.volume_name(instance))

    def restore_dir(self, instance, restore_id: int) -> Path:
        name = self.restore_volume_name(instance, restore_id)
        if self._podman("volume", "exists", name, check=False).returncode != 0:
            created = self._podman("volume", "create", "--label", f"{RESTORE_LABEL}={instance.team_id}/{int(restore_id)}",
                                   "--label", f"{PREFIX_LABEL}={self.name_prefix}", name, check=False)
            if created.returncode != 0 and self._podman("volume", "exists", name, check=False).returncode != 0:
                raise BackendError(f"creating volume {name} failed: {created.stderr.strip()}")
        return self._mount_point(name)

    def litestream_path(self) -> str:
        # Litestream runs here, on the host, beside the control plane (as the restore drills' does).
        return host_litestream()

    def preview_running(self, instance, restore_id: int) -> bool:
        result = self._podman("container", "inspect", "--format", "{{.State.Running}}",
                              self.preview_container_name(instance, restore_id), check=False)
        return result.returncode == 0 and result.stdout.strip() == "true"

    def spawn_preview(self, instance, restore_id: int, port: int, preview_secret: str) -> None:
        name = self.preview_container_name(instance, restore_id)
        self._remove_container(name)  # one that exited: made anew on this port
        data = self.restore_dir(instance, restore_id) / "data"
        # Nothing of the team's spec: no token, no credentials, and a firewall that lets it reach nothing of the host.
        created = self._podman(
            "run", "--detach", "--name", name,
            "--annotation", f"{firewall.ANNOTATION}={firewall.annotation([])}",
            "--label", f"{PREVIEW_LABEL}={instance.team_id}/{int(restore_id)}",
            "--label", f"{PREFIX_LABEL}={self.name_prefix}",
            "--network", "slirp4netns:allow_host_loopback=false,enable_ipv6=false",
            "--publish", f"{PUBLISH_ADDRESS}:{port}:{CONTAINER_PORT}",
            "--volume", f"{data}:{DATA_DIR}:ro,U", *self._confinement_options(),
            "--env", f"DATA_DIR={DATA_DIR}", "--env", f"PORT={CONTAINER_PORT}", "--env", "HOME=/tmp",
            "--env", "CLOUDCTL_PREVIEW_SECRET", self._image(self._inspect(instance)) or instance.image,
            secrets={"CLOUDCTL_PREVIEW_SECRET": preview_secret}, check=False)
        if created.returncode != 0:
            self._remove_container(name)
            raise BackendError(f"podman run of the preview failed: {created.stderr.strip()}")

    def preview_log(self, instance, restore_id: int) -> str:
        logs = self._podman("logs", "--tail", "1", self.preview_container_name(instance, restore_id), check=False)
        return (logs.stdout + logs.stderr).strip()

    def stop_preview(self, instance, restore_id: int) -> None:
        self._remove_container(self.preview_container_name(instance, restore_id))

    def delete_restore_volumes(self, instance, restore_id: int) -> None:
        self.stop_preview(instance, restore_id)
        self._podman("volume", "rm", "--force", self.restore_volume_name(instance, restore_id), check=False)

    def _mount_point(self, volume: str) -> Path:
        inspected = self._podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
        return Path(inspected.stdout.strip())

    # --- internals --------------------------------------------------------------------------------------

    def _podman(self, *args: str, check: bool = True, secrets: Mapping[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """podman with `args`; `secrets` are put in its environment, for `--env NAME` to take them from there."""
        env = {**os.environ, **(secrets or {}), "CONTAINERS_CONF": self.containers_conf}
        try:
            result = subprocess.run([self.podman_command, "--hooks-dir", str(self._hooks_dir()), *args], env=env,
                                    capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BackendError(f"podman {args[0]} failed: {error}") from None
        if check and result.returncode != 0:
            # podman's stderr names the object and the reason; no command of ours carries a secret in its arguments.
            raise BackendError(f"podman {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result

    def _hooks_dir(self) -> Path:
        """The OCI hooks podman runs for our containers: the egress firewall (`container_firewall.py`), at every
        start of a container annotated with what it may reach, run by this interpreter."""
        hooks = self.state_dir / "hooks.d"
        config = json.dumps({
            "version": "1.0.0", "stages": ["createRuntime"],
            "hook": {"path": sys.executable, "args": [sys.executable, firewall.__file__],
                     "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "when": {"annotations": {f"^{re.escape(firewall.ANNOTATION)}$": ".*"}},
        }, indent=1)
        path = hooks / "cloudctl-egress-firewall.json"
        if not path.exists() or path.read_text() != config:
            hooks.mkdir(parents=True, exist_ok=True)
            staged = path.with_suffix(f".{os.getpid()}.tmp")  # not a .json: podman reads only those
            staged.write_text(config)
            staged.replace(path)
        return hooks

    def _inspect(self, instance) -> dict | None:
        """The team's container as podman inspects it, or None when there is none (or one not ours by its labels)."""
        result = self._podman("container", "inspect", self.container_name(instance), check=False)
        if result.returncode != 0:
            if "no such container" in result.stderr.lower():
                return None
            raise BackendError(f"podman container inspect failed: {result.stderr.strip()}")
        container = json.loads(result.stdout)[0]
        if container["Config"]["Labels"].get(TEAM_LABEL) != str(instance.team_id):
            return None
        return container

    def _list_containers(self) -> list[dict]:
        listed = self._podman("ps", "--all", "--format", "json", "--filter", f"label={PREFIX_LABEL}={self.name_prefix}")
        return json.loads(listed.stdout or "[]")

    def _list_volumes(self) -> list[dict]:
        listed = self._podman("volume", "ls", "--format", "json", "--filter",
                              f"label={PREFIX_LABEL}={self.name_prefix}")
        return json.loads(listed.stdout or "[]")

    def _state(self, container: dict | None) -> ObservedState:
        if container is None:
            return ObservedState.MISSING
        return self._state_of(container["State"]["Status"], container["State"]["ExitCode"])

    @staticmethod
    def _state_of(status: str, exit_code: int) -> ObservedState:
        if status == "exited":
            return ObservedState.STOPPED if exit_code in CLEAN_EXIT_CODES else ObservedState.CRASHED
        return STATES.get(status, ObservedState.MISSING)

    def _observation(self, container: dict | None) -> Observation:
        return Observation(self._state(container), image=self._image(container))

    @staticmethod
    def _image(container: dict | None) -> str | None:
        return None if container is None else container["Config"]["Labels"].get(IMAGE_LABEL)

    def _resources(self, container_id: str, port: int) -> dict:
        return {"container": container_id, "port": port, "url": f"http://{PUBLISH_ADDRESS}:{port}/"}

    def _remove_team(self, name: str) -> None:
        """The team's container and its volume, with its restores' previews and volumes (its backups in S3 stay)."""
        self._remove_container(name)
        self._podman("volume", "rm", "--force", f"{name}-data", check=False)
        for container in self._list_containers():
            if any(listed.startswith(f"{name}-preview-") for listed in container.get("Names", [])):
                self._remove_container(container["Names"][0])
        for volume in self._list_volumes():
            if volume.get("Name", "").startswith(f"{name}-restore-"):
                self._podman("volume", "rm", "--force", volume["Name"], check=False)

    def _remove_container(self, name: str) -> None:
        """Stopped (with the time a stop gets) and removed, with any anonymous volume; none is fine."""
        self._podman("rm", "--force", "--volumes", "--time", str(STOP_TIMEOUT_SECONDS), "--ignore", name,
                     timeout=STOP_TIMEOUT_SECONDS + 30)

    def _confinement_options(self) -> list[str]:
        """What every container of ours runs under, a team's or a preview's: its user, limits and no privileges."""
        return ["--user", self.user, "--read-only", "--read-only-tmpfs", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "--memory", self.memory, "--cpus", self.cpus,
                "--pids-limit", str(self.pids_limit), "--restart", "no", "--pull", "never",
                "--stop-timeout", str(STOP_TIMEOUT_SECONDS)]

    def container_environment(self, instance, spec) -> tuple[dict[str, str], list[tuple[str, int]]]:
        """The spec's environment as the container sees it, and the (address, port) pairs of the host it must
        reach: a loopback host in the control plane's URLs becomes the host's address in the container's network."""
        env = {**spec.env, "DATA_DIR": DATA_DIR, "PORT": str(CONTAINER_PORT), "HOME": DATA_DIR}
        allowed = []
        for variable in CONTROL_PLANE_URL_VARIABLES:
            url = env.get(variable)
            if not url:
                continue
            parts = urlsplit(url)
            host, port = parts.hostname or "", parts.port or _default_port(parts.scheme)
            if _is_loopback(host):
                netloc = f"{HOST_LOOPBACK}:{port}"
                env[variable] = urlunsplit(parts._replace(netloc=netloc))
                allowed.append((HOST_LOOPBACK, port))
            else:
                try:
                    addresses = {info[4][0] for info in socket.getaddrinfo(host, port, socket.AF_INET)}
                except OSError:
                    addresses = set()  # not resolvable here: the container's resolver may, outside the blocked ranges
                allowed.extend((address, port) for address in sorted(addresses))
        return env, allowed

    def _create(self, instance, port: int, *, image: str, start: bool, replacing: bool) -> dict:
        """Make the team's container anew from its spec on `image` (the one it is `replacing` removed first), with its
        firewall in place before anything runs in it; started when `start`. Returns its resources."""
        spec = self.spec_for(instance)
        name = self.container_name(instance)
        if replacing:
            self._remove_container(name)
        env, allowed = self.container_environment(instance, spec)
        # The secrets by name only: podman takes their values from its own environment, never from a command line.
        secret_options = [option for variable in spec.secrets for option in ("--env", variable)]
        env_options = [option for variable, value in env.items() for option in ("--env", f"{variable}={value}")]
        # Made and started in one: the firewall hook runs between the two, before anything runs in the container.
        created = self._podman(
            "run" if start else "create", *(["--detach"] if start else []), "--name", name,
            "--annotation", f"{firewall.ANNOTATION}={firewall.annotation(allowed)}",
            "--label", f"{TEAM_LABEL}={instance.team_id}", "--label", f"{PREFIX_LABEL}={self.name_prefix}",
            "--label", f"{GENERATION_LABEL}={instance.team.token_generation}",
            "--label", f"{IMAGE_LABEL}={image}", "--label", f"{START_LABEL}={'yes' if start else 'no'}",
            "--network", NETWORK, "--publish", f"{PUBLISH_ADDRESS}:{port}:{CONTAINER_PORT}",
            "--volume", f"{self.volume_name(instance)}:{DATA_DIR}:U", *self._confinement_options(),
            *secret_options, *env_options, image, secrets=spec.secrets, check=False)
        if created.returncode != 0:
            self._remove_container(name)  # a run refused by its firewall hook leaves the container made, not started
            raise BackendError(f"podman {'run' if start else 'create'} failed: {created.stderr.strip()}")
        return self._resources(created.stdout.strip().splitlines()[-1], port)
