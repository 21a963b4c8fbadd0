#!/usr/bin/env python
"""From "create team" to a Datasette answering, on the embedded stack, against a bare Datasette start.

Side by side, alternating, in one run:
- bare: the instance virtualenv's `datasette serve` on an empty database, launch -> first HTTP 200;
- cloudctl: `create_team` (the command's code path) with the control plane served as `manage.py dev` does, the task
  worker and the local backend -> first HTTP 200 from the team's Datasette, and -> first backup object under
  `team-<id>/` in the local S3.

    .venv/bin/python bench/provision.py [--runs 3]

Last line: `ratio: <median create->200 / median bare start>` (target: at most 2.0).
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
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")

    from cloudctl.local_s3 import LocalS3Server, free_port_set

    work = Path(tempfile.mkdtemp(prefix="cloudctl-bench-provision-"))
    s3 = LocalS3Server(work / "s3", ports=free_port_set())
    config = s3.start()
    port = free_port()
    os.environ.pop("AWS_CA_BUNDLE", None)
    os.environ.update({
        **config.client_environ(),
        "DJANGO_SETTINGS_MODULE": "cloudctl.settings",
        "CLOUDCTL_STATE_DIR": str(work / "state"),
        "CLOUDCTL_PRIVATE_API_URL": f"http://127.0.0.1:{port}",
        "CLOUDCTL_LOG_LEVEL": "WARNING",
        # Instances need the private API, the readiness probe the admin's login page: both, as `manage.py dev`.
        "CLOUDCTL_URLCONF": "cloudctl.urls",
    })
    children = []
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        logs = open(work / "control-plane.log", "ab")
        children.append(subprocess.Popen(
            [sys.executable, "-m", "cloudctl.server", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            cwd=REPO, stdout=logs, stderr=logs))
        children.append(subprocess.Popen(
            [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-reload", "--no-startup-delay"],
            cwd=REPO, stdout=logs, stderr=logs))
        poll(lambda: answers(f"http://127.0.0.1:{port}/accounts/login/"), "the control plane")

        import boto3

        from instances.models import Instance
        from instances.services import create_team_and_provision
        from teams.routing import routing_secret, team_hostname

        s3_admin = boto3.client("s3")
        bare, to_http, to_backup = [], [], []
        for run in range(args.runs):
            bare.append(bare_start(work))
            started = time.perf_counter()
            team = create_team_and_provision(f"bench-{run}")

            # The instance serves only its router's requests: asked as the router asks.
            as_router = {"Host": team_hostname(team.slug),
                         "fly-replay-src": f"state={routing_secret(team.pk)}"}

            def serving():
                # The URL is known once the instance process is started; a user could open it from then on.
                url = Instance.objects.filter(team=team).values_list("url", flat=True).first()
                return bool(url) and answers(url, as_router)

            poll(serving, f"team {team.slug}'s Datasette")
            to_http.append(time.perf_counter() - started)
            poll(lambda: s3_admin.list_objects_v2(Bucket=config.bucket, Prefix=team.storage_prefix).get("KeyCount"),
                 f"team {team.slug}'s first backup object")
            to_backup.append(time.perf_counter() - started)
            print(f"run {run + 1}: bare start {bare[-1]:.2f} s   create -> HTTP 200 {to_http[-1]:.2f} s   "
                  f"create -> first backup object {to_backup[-1]:.2f} s", flush=True)
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
          f"create team -> first HTTP 200 {median(to_http):.2f} s   "
          f"create team -> first backup object in S3 {median(to_backup):.2f} s")
    print(f"ratio: {median(to_http) / median(bare):.2f}")


if __name__ == "__main__":
    main()
