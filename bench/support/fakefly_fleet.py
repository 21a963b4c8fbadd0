"""What the Fly benches share: the fake Machines API in its own process, Django on a throwaway SQLite, and a
Fly client that counts its requests. Not a bench: `make bench` runs the scripts directly in bench/."""

import collections
import os
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ORG = "bench"
IMAGE = "registry.fly.io/cloudctl-team:v1"


def start_fake(*options: str) -> tuple[subprocess.Popen, str]:
    """The fake in its own process: it checks every body against Fly's OpenAPI spec, CPU not charged to us."""
    fake = subprocess.Popen([sys.executable, "-m", "fakefly", "--org", ORG, *options], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    line = fake.stdout.readline()  # "fakefly: Fly Machines API at http://127.0.0.1:PORT/v1 (any Bearer token)"
    return fake, line.split(" at ")[1].split()[0]


def configure_django(state_dir: str, url: str) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "cloudctl.settings",
        "CLOUDCTL_STATE_DIR": state_dir,
        "DATABASE_URL": f"sqlite:///{state_dir}/bench.sqlite3",
        "CLOUDCTL_MACHINE_BACKEND": "instances.backends.fly.FlyBackend",
        "CLOUDCTL_FLY_API_URL": url,
        "CLOUDCTL_FLY_API_TOKEN": "bench-token",
        "CLOUDCTL_FLY_ORG": ORG,
        "CLOUDCTL_INSTANCE_IMAGE": IMAGE,
        "CLOUDCTL_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    })
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def counting_client(concurrency: int):
    """A FlyClient whose transport counts requests and 429 answers."""
    import httpx

    from django.conf import settings

    from flyapi import FlyClient

    counts = collections.Counter()
    lock = threading.Lock()

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request):
            response = super().handle_request(request)
            with lock:
                counts["requests"] += 1
                counts[f"status {response.status_code}"] += 1
            return response

    transport = Counting(limits=httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency))
    return FlyClient(settings.FLY_API_URL, settings.FLY_API_TOKEN, transport=transport), counts
