"""Real control-plane processes (`manage.py` commands, the web server) against a fake Fly API served by the test,
sharing the test's database (tests/database.py)."""

import os
import subprocess
import sys
from pathlib import Path

from .database import database_url

REPO = Path(__file__).resolve().parent.parent
ORG = "acme"
IMAGE = "registry.fly.io/cloudctl-team:v1"


def control_plane_env(url: str, state_dir: Path, **extra: str) -> dict:
    """A control-plane process's environment on the Fly backend, the fake at `url` standing in for Fly's API."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CLOUDCTL_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "cloudctl.settings",
        "DATABASE_URL": database_url(),
        "CLOUDCTL_STATE_DIR": str(state_dir),
        "CLOUDCTL_TOKEN_KEYS": "test-signing-key-old,test-signing-key-current",
        "CLOUDCTL_MACHINE_BACKEND": "instances.backends.fly.FlyBackend",
        "CLOUDCTL_FLY_API_URL": url,
        "CLOUDCTL_FLY_API_TOKEN": "fly-test-token",
        "CLOUDCTL_FLY_ORG": ORG,
        "CLOUDCTL_FLY_VISIBILITY_GRACE": "3",
        "CLOUDCTL_INSTANCE_IMAGE": IMAGE,
        **extra,
    })
    return env


def manage_process(url: str, state_dir: Path, *args: str, text: bool = False, stdout=subprocess.PIPE,
                   **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=REPO,
                            env=control_plane_env(url, state_dir, **extra_env), stdout=stdout,
                            stderr=subprocess.STDOUT, text=text)
