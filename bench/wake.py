#!/usr/bin/env python
"""Wake from zero through the embedded router, against a bare Datasette start, in one run.

The embedded stack as `manage.py dev` runs it (local S3/STS, the control plane's server, the task worker, the
router) and one team. Each run stops the team's instance (as an operator's stop or a scale to zero leaves it),
then asks `http://<slug>.localhost:<port>/` through the router: the router queues the start on the worker and
holds the request until the instance answers. Measured: the request's first byte. Alternating with the bare
yardstick: the instance virtualenv's `datasette serve` on an empty database, launch -> first HTTP 200.

    .venv/bin/python bench/wake.py [--runs 5]

Last line: `ratio: <median wake -> first byte / median bare start>` (target: at most 1.5).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.support.datasette import INSTANCE_BIN, answers, bare_start, free_port, poll  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")

    from cloudctl.local_s3 import LocalS3Server, free_port_set

    work = Path(tempfile.mkdtemp(prefix="cloudctl-bench-wake-"))
    s3 = LocalS3Server(work / "s3", ports=free_port_set())
    config = s3.start()
    port, router_port = free_port(), free_port()
    os.environ.pop("AWS_CA_BUNDLE", None)
    os.environ.update({
        **config.client_environ(),
        "DJANGO_SETTINGS_MODULE": "cloudctl.settings",
        "CLOUDCTL_STATE_DIR": str(work / "state"),
        "CLOUDCTL_PRIVATE_API_URL": f"http://127.0.0.1:{port}",
        "CLOUDCTL_LOG_LEVEL": "WARNING",
        "CLOUDCTL_URLCONF": "cloudctl.urls",
        "CLOUDCTL_TEAMS_DOMAIN": "localhost",
    })
    children = []
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        logs = open(work / "control-plane.log", "ab")
        for command in (
            [sys.executable, "-m", "cloudctl.server", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-reload", "--no-startup-delay"],
            [sys.executable, "-m", "router.server", "--bind", f"127.0.0.1:{router_port}", "--mode", "embedded"],
        ):
            children.append(subprocess.Popen(command, cwd=REPO, stdout=logs, stderr=logs))
        poll(lambda: answers(f"http://127.0.0.1:{port}/accounts/login/"), "the control plane")

        import httpx

        from instances.lifecycle import stop_instance
        from instances.services import create_team_and_provision

        team = create_team_and_provision("bench")
        through_router = (f"http://127.0.0.1:{router_port}/", {"Host": f"bench.localhost:{router_port}"})
        poll(lambda: answers(*through_router), "the team through the router")
        bare, wake = [], []
        for run in range(args.runs):
            bare.append(bare_start(work))
            stop_instance(team, actor="bench/wake.py")
            started = time.perf_counter()
            with httpx.stream("GET", through_router[0], headers=through_router[1], timeout=120) as response:
                wake.append(time.perf_counter() - started)
                assert response.status_code == 200, response.status_code
            print(f"run {run + 1}: bare start {bare[-1]:.2f} s   wake -> first byte {wake[-1]:.2f} s", flush=True)
            # The start the router queued finishes (its health read) before the next stop.
            poll(lambda: not team.actions.filter(status__in=["queued", "running"]).exists(), "the start to finish")
    finally:
        from django.conf import settings

        from instances.supervision import stop_all

        stop_all(settings.MACHINE_BACKEND)
        for child in children:
            child.terminate()
            child.wait()
        s3.stop()

    median = statistics.median
    print(f"\nmedian of {args.runs}:  bare Datasette start {median(bare):.2f} s   "
          f"wake through the router -> first byte {median(wake):.2f} s")
    print(f"ratio: {median(wake) / median(bare):.2f}")


if __name__ == "__main__":
    main()
