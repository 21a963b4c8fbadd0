#!/usr/bin/env python
"""From "create team" to a Datasette answering, on the embedded stack, against a bare Datasette start.

Side by side, alternating, in one run, for each machine backend:
- local: bare is the instance virtualenv's `datasette serve` on an empty database, launch -> first HTTP 200;
  cloudctl is `create_team` (the command's code path) with the control plane served as `manage.py dev` does, the
  task worker and the local backend -> first HTTP 200 from the team's Datasette, and -> first backup object under
  `team-<id>/` in the local S3.
- container: bare is a bare `podman run` of the instance image's Datasette (no Litestream, no control plane, no
  firewall, no secrets; the same network mode and published port), launch -> first HTTP 200; cloudctl is the same
  create on the container backend (podman, `make images`). Run in its own process (Django's settings name one
  backend); skipped with a note when podman or the image is missing.

    .venv/bin/python bench/provision.py [--runs 3] [--backend local|container|both]

Each backend's last line: `ratio: <median create->200 / median bare start>` (target: at most 2.0).
"""

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.support.datasette import INSTANCE_BIN, answers, bare_start, free_port, poll  # noqa: E402
from bench.support.embedded_stack import embedded_stack  # noqa: E402

CONTAINER = "instances.backends.container.ContainerBackend"
INSTANCE_IMAGE = "localhost/cloudctl-instance:latest"


def bare_container_start(prefix: str, run: int) -> float:
    """The instance image's Datasette alone in a container: `podman run` -> first HTTP 200."""
    from instances.backends.container import NETWORK
    from tests.images import podman

    port, name = free_port(), f"{prefix}bare-{run}"
    started = time.perf_counter()
    podman("run", "--detach", "--rm", "--name", name, "--network", NETWORK, "--publish", f"127.0.0.1:{port}:8080",
           "--entrypoint", "datasette", INSTANCE_IMAGE, "serve", "/tmp/bare.db", "--create", "--host", "0.0.0.0",
           "--port", "8080")
    try:
        poll(lambda: answers(f"http://127.0.0.1:{port}/"), "the bare Datasette container")
        return time.perf_counter() - started
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False)


def measure(backend: str, runs: int) -> None:
    prefix = f"cloudctl-bench-{secrets.token_hex(3)}-"
    if backend == "container":
        os.environ.update({"CLOUDCTL_MACHINE_BACKEND": CONTAINER, "CLOUDCTL_INSTANCE_IMAGE": INSTANCE_IMAGE,
                           "CLOUDCTL_CONTAINER_NAME_PREFIX": prefix})
    with embedded_stack("provision") as stack:
        import boto3

        from instances.machines import get_backend
        from instances.models import Instance
        from instances.services import create_team_and_provision
        from teams.routing import routing_secret, team_hostname

        s3_admin = boto3.client("s3")
        bare, to_http, to_backup = [], [], []
        try:
            for run in range(runs):
                bare.append(bare_container_start(prefix, run) if backend == "container" else bare_start(stack.work))
                started = time.perf_counter()
                team = create_team_and_provision(f"bench-{run}")

                # The instance serves only its router's requests, to signed-in members: asked as the router asks.
                as_router = {"Host": team_hostname(team.slug),
                             "fly-replay-src": f"state={routing_secret(team.pk)}"}

                def serving():
                    # The URL is known once the instance is started; a user could open it from then on.
                    url = Instance.objects.filter(team=team).values_list("url", flat=True).first()
                    signed_in = url and stack.signed_in(team)
                    return bool(url and signed_in) and answers(url, {**as_router, **signed_in})

                poll(serving, f"team {team.slug}'s Datasette")
                to_http.append(time.perf_counter() - started)
                poll(lambda: s3_admin.list_objects_v2(Bucket=stack.bucket, Prefix=team.storage_prefix).get("KeyCount"),
                     f"team {team.slug}'s first backup object")
                to_backup.append(time.perf_counter() - started)
                print(f"{backend} run {run + 1}: bare start {bare[-1]:.2f} s   "
                      f"create -> HTTP 200 {to_http[-1]:.2f} s   "
                      f"create -> first backup object {to_backup[-1]:.2f} s", flush=True)
        finally:
            if backend == "container":  # every team's container, volume and secrets, named with this run's prefix
                machines = get_backend(CONTAINER)
                for name in machines.orphans(set()):
                    machines.delete_orphan(name)

    median = statistics.median
    print(f"\n{backend} backend, median of {runs}:  bare Datasette start {median(bare):.2f} s   "
          f"create team -> first HTTP 200 {median(to_http):.2f} s   "
          f"create team -> first backup object in S3 {median(to_backup):.2f} s")
    print(f"ratio: {median(to_http) / median(bare):.2f}", flush=True)


def container_backend_missing() -> str | None:
    from tests.images import podman

    if shutil.which("podman") is None:
        return "podman is not installed (make podman)"
    if podman("image", "exists", INSTANCE_IMAGE, check=False).returncode != 0:
        return f"{INSTANCE_IMAGE} is not built (make images)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["local", "container", "both"], default="both")
    args = parser.parse_args()
    if args.backend in ("local", "both"):
        if not (INSTANCE_BIN / "datasette").exists():
            sys.exit("the instance virtualenv is missing: run `make instance-venv`")
        if args.backend == "local":
            return measure("local", args.runs)
        # Django's settings name one backend per process: each backend is measured in its own.
        subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--backend", "local"], check=True)
    missing = container_backend_missing()
    if missing:
        print(f"container backend not measured: {missing}")
    elif args.backend == "container":
        measure("container", args.runs)
    else:
        subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--backend", "container"], check=True)


if __name__ == "__main__":
    main()
