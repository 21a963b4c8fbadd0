"""podman and the two images `make images` builds (podman/build-images), for the tests that run them.

Without podman or the images a test that needs them skips, except under `make test`, which builds them first and
sets CLOUDCTL_REQUIRE_IMAGES: there a missing image is a failure, never a silent skip."""

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = REPO / "podman" / "containers.conf"
CONTROL_PLANE_IMAGE = "localhost/cloudctl"
INSTANCE_IMAGE = "localhost/cloudctl-instance"


def podman_env() -> dict:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def podman(*args: str, check: bool = True, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, check=check, timeout=timeout, input=input
    )


def require_image(image: str) -> str:
    """The image's name, once it is known to exist; skips (or fails under `make test`) otherwise."""
    missing = None
    if shutil.which("podman") is None:
        missing = "podman is not installed (make podman)"
    elif podman("image", "exists", image, check=False).returncode != 0:
        missing = f"{image} is not built (make images)"
    if missing:
        if os.environ.get("CLOUDCTL_REQUIRE_IMAGES"):
            pytest.fail(missing)
        pytest.skip(missing)
    return image


class Containers:
    """The containers and volumes one test module runs, named `cloudctl-test-<run>-<role>` (unique per run, so runs
    side by side never meet) and all removed by `remove_all`, whatever state they were left in."""

    def __init__(self):
        self.prefix = f"cloudctl-test-{secrets.token_hex(4)}"
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def run(self, role: str, image: str, *command: str, options: tuple[str, ...] = (), detach: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """`podman run` (in the background by default) of `image` as the container `<prefix>-<role>`."""
        name = f"{self.prefix}-{role}"
        self.containers.append(name)
        return podman("run", *(["--detach"] if detach else []), "--name", name, *options, image, *command,
                      check=False, timeout=timeout)

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def volume(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        podman("volume", "create", name)
        self.volumes.append(name)
        return name

    def logs(self, role: str) -> str:
        result = podman("logs", self.name(role), check=False)
        return result.stdout + result.stderr

    def finished_at(self, role: str) -> str:
        return podman("inspect", "--format", "{{.State.FinishedAt}}", self.name(role)).stdout.strip()

    def state(self, role: str) -> tuple[str, int]:
        """The container's status (running, exited...) and exit code."""
        status, code = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                              self.name(role)).stdout.split()
        return status, int(code)

    def remove(self, role: str) -> None:
        podman("rm", "--force", "--ignore", "--time", "0", self.name(role))

    def remove_volume(self, name: str) -> None:
        podman("volume", "rm", "--force", name, check=False)

    def remove_all(self) -> None:
        if self.containers:
            podman("rm", "--force", "--ignore", "--time", "0", *self.containers, check=False)
        if self.volumes:
            podman("volume", "rm", "--force", *self.volumes, check=False)
