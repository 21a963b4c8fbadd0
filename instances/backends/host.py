"""What the backends that run instances on this host (local processes, podman containers) share: a port of its own
on 127.0.0.1 kept across restarts, one start decision at a time per team, a start that waits for the health
check's 200 while watching that the instance has not exited, and point-in-time restore's volumes on this host's
disk (the restore into a new volume, the preview's start and wait, the swap in and back decided from what is on
disk)."""

from __future__ import annotations

import abc
import fcntl
import os
import shutil
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx

from .base import UNHEALTHY_STATES, BackendError, MachineBackend, ObservedState, RestoreSource, Step
from .replica_restore import restore_replica

# A restore downloads the whole chain of LTX files: generous, but never a hung step forever.
RESTORE_TIMEOUT_SECONDS = 3600
PREVIEW_HEADER = "X-Cloudctl-Preview"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the instance's server binds: connections of the previous run left in TIME_WAIT must not make the
        # team's port, and so its URL, change on every restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class HostBackend(MachineBackend):
    """Subclasses set `health_timeout` and provide the volume and the start (`ensure_volume`, `ensure_running`), where
    a team's start lock lives (`start_lock_path`) and how a start notices the instance exited (`exit_watch`); for
    restores, where the live volume and a restore's directory are on this host's disk (`live_volume_path`,
    `restore_dir`, on one file system so volumes move by rename), the Litestream that restores into them
    (`litestream_path`), and the preview's own process (`preview_running`, `spawn_preview`, `stop_preview`,
    `preview_log`, `delete_restore_volumes`)."""

    runs_instances_here = True
    health_timeout: float

    def provisioning_steps(self) -> list[Step]:
        return [Step("volume", self.ensure_volume), Step("machine", self.ensure_running),
                Step("healthy", self.wait_healthy)]

    @abc.abstractmethod
    def ensure_volume(self, instance) -> dict: ...

    @abc.abstractmethod
    def ensure_running(self, instance) -> dict: ...

    @abc.abstractmethod
    def start_lock_path(self, instance) -> Path: ...

    @abc.abstractmethod
    def exit_watch(self, instance) -> Callable[[], bool]:
        """A check, called about ten times a second during a start, that answers True once the instance has exited."""

    def team_port(self, instance) -> int:
        """The port the team had, unless something else took it meanwhile."""
        port = instance.resources.get("port")
        return port if port and port_is_free(port) else free_port()

    @contextmanager
    def team_lock(self, instance):
        """Orders the start decisions for one team across every process of this host."""
        path = self.start_lock_path(instance)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def wait_healthy(self, instance) -> dict:
        """Its health check path answers 200: the one path an instance serves without its router's secret."""
        url = instance.resources["url"]
        probe = url.rstrip("/") + self.spec_for(instance).health_check_path
        exited = self.exit_watch(instance)
        deadline = time.monotonic() + self.health_timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(probe, timeout=2).status_code == 200:
                    return {}
            except httpx.HTTPError:
                pass
            if exited():
                raise BackendError(f"the instance exited during start; last log lines:\n{self.log_tail(instance)}")
            time.sleep(0.1)
        raise BackendError(f"no HTTP 200 from {url} within {self.health_timeout}s")

    def health_problem(self, instance) -> str | None:
        observed = self.observe(instance)
        if observed is not ObservedState.RUNNING:
            return UNHEALTHY_STATES.get(observed)
        try:
            self.wait_healthy(instance)
        except BackendError as error:
            return f"it runs but fails its health check: {error}"
        return None

    def start(self, instance) -> dict:
        resources = self.ensure_running(instance)
        instance.resources.update(resources)
        self.wait_healthy(instance)
        return resources

    # --- point-in-time restore --------------------------------------------------------------------------
    # A restore's directory holds `data` (restored, until swapped in), `previous` (the volume a swap replaced),
    # `replaced` (the one a swap back replaced) and the preview's port (and whatever else the backend keeps there).
    # The live volume stays where it is, so the instance's start never changes.

    @abc.abstractmethod
    def live_volume_path(self, instance) -> Path: ...

    @abc.abstractmethod
    def restore_dir(self, instance, restore_id: int) -> Path:
        """The restore's directory, made if missing."""

    @abc.abstractmethod
    def litestream_path(self) -> str: ...

    @abc.abstractmethod
    def preview_running(self, instance, restore_id: int) -> bool: ...

    @abc.abstractmethod
    def spawn_preview(self, instance, restore_id: int, port: int, preview_secret: str) -> None:
        """Start the preview of the restore's `data` on 127.0.0.1:`port`, the secret never on a command line."""

    @abc.abstractmethod
    def preview_log(self, instance, restore_id: int) -> str:
        """The preview's last log line, for a refusal."""

    def create_restore_volume(self, instance, restore_id: int) -> dict:
        data = self.restore_dir(instance, restore_id) / "data"
        data.mkdir(parents=True, exist_ok=True)
        return {"volume": str(data)}

    def restore_into_volume(self, instance, restore_id: int, database: str, source: RestoreSource) -> dict:
        volume = Path(self.create_restore_volume(instance, restore_id)["volume"])
        restored = volume / database
        if restored.exists():  # renamed into place only once restored and checked
            return {"database": str(restored)}
        partial = volume.parent / f"{database}.partial"
        restore_replica(self.litestream_path(), source, database, partial, work_dir=volume.parent,
                        timeout=RESTORE_TIMEOUT_SECONDS)
        os.replace(partial, restored)
        return {"database": str(restored)}

    def start_preview(self, instance, restore_id: int, preview_secret: str) -> dict:
        restore_dir = self.restore_dir(instance, restore_id)
        if not (restore_dir / "data").is_dir():
            raise BackendError(f"restore {restore_id} has no restored volume to preview")
        port_file = restore_dir / "preview.port"
        with self.team_lock(instance):
            if not self.preview_running(instance, restore_id):
                port = free_port()
                port_file.write_text(str(port))
                self.spawn_preview(instance, restore_id, port, preview_secret)
        url = f"http://127.0.0.1:{int(port_file.read_text())}/"
        self._wait_for_preview(instance, restore_id, url, preview_secret)
        return {"url": url}

    def _wait_for_preview(self, instance, restore_id: int, url: str, preview_secret: str) -> None:
        deadline = time.monotonic() + self.health_timeout
        while time.monotonic() < deadline:
            if not self.preview_running(instance, restore_id):
                raise BackendError(f"the preview of restore {restore_id} exited: {self.preview_log(instance, restore_id)}")
            try:
                if httpx.get(f"{url}-/versions.json", headers={PREVIEW_HEADER: preview_secret},
                             timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise BackendError(f"the preview of restore {restore_id} did not answer within {self.health_timeout}s")

    def swap_in_restore(self, instance, restore_id: int) -> dict:
        restore_dir = self.restore_dir(instance, restore_id)
        self.stop_preview(instance, restore_id)
        self._move_volumes(instance, incoming=restore_dir / "data", outgoing=restore_dir / "previous")
        return self.start(instance)

    def swap_back_restore(self, instance, restore_id: int) -> dict:
        restore_dir = self.restore_dir(instance, restore_id)
        self._move_volumes(instance, incoming=restore_dir / "previous", outgoing=restore_dir / "replaced")
        return self.start(instance)

    def _move_volumes(self, instance, *, incoming: Path, outgoing: Path) -> None:
        """Stop the instance, move the live volume to `outgoing` and `incoming` into its place. Decided from what
        is on disk, so a run after a crash between the moves finishes them; once `incoming` is gone, done."""
        live = self.live_volume_path(instance)
        if not incoming.exists():
            if not live.exists():
                raise BackendError(f"neither {incoming.name} nor a live volume is here: nothing to start on")
            return
        self.stop_before_swap(instance)  # Litestream's last sync of everything the live volume holds
        if live.exists() and outgoing.exists():
            if any(live.iterdir()):
                raise BackendError(f"{outgoing.name} and a live volume both exist: refusing to overwrite either")
            live.rmdir()  # an empty volume made since the first move (ensure_volume): nothing on it
        if live.exists():
            os.replace(live, outgoing)
        # The team's own plugins are the team's code, not its data: they stay with whatever volume is live.
        plugins = outgoing / "plugins"
        if plugins.is_dir() and not (incoming / "plugins").exists():
            shutil.copytree(plugins, incoming / "plugins", symlinks=True)
        os.replace(incoming, live)

    def stop_before_swap(self, instance) -> None:
        self.stop(instance)
