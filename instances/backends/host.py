"""What the backends that run instances on this host (local processes, podman containers) share: a port of its own
on 127.0.0.1 kept across restarts, one start decision at a time per team, and a start that waits for the health
check's 200 while watching that the instance has not exited."""

from __future__ import annotations

import abc
import fcntl
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx

from .base import UNHEALTHY_STATES, BackendError, MachineBackend, ObservedState, Step


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
    a team's start lock lives (`start_lock_path`) and how a start notices the instance exited (`exit_watch`)."""

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
