"""podman and the two images `make images` builds (podman/build-images), for the tests that run them.

Without podman or the images a test that needs them skips, except under `make test`, which builds them first and
sets CLOUDCTL_REQUIRE_IMAGES: there a missing image is a failure, never a silent skip."""

import os
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
