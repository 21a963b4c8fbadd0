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
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.support.datasette import INSTANCE_BIN, answers, bare_start, poll  # noqa: E402
from bench.support.embedded_stack import embedded_stack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")

    with embedded_stack("provision") as stack:
        import boto3

        from instances.models import Instance
        from instances.services import create_team_and_provision
        from teams.routing import routing_secret, team_hostname

        s3_admin = boto3.client("s3")
        bare, to_http, to_backup = [], [], []
        for run in range(args.runs):
            bare.append(bare_start(stack.work))
            started = time.perf_counter()
            team = create_team_and_provision(f"bench-{run}")

            # The instance serves only its router's requests, to signed-in members: asked as the router asks, signed in.
            as_router = {"Host": team_hostname(team.slug),
                         "fly-replay-src": f"state={routing_secret(team.pk)}"}

            def serving():
                # The URL is known once the instance process is started; a user could open it from then on.
                url = Instance.objects.filter(team=team).values_list("url", flat=True).first()
                signed_in = stack.signed_in(team)
                return bool(url and signed_in) and answers(url, {**as_router, **signed_in})

            poll(serving, f"team {team.slug}'s Datasette")
            to_http.append(time.perf_counter() - started)
            poll(lambda: s3_admin.list_objects_v2(Bucket=stack.bucket, Prefix=team.storage_prefix).get("KeyCount"),
                 f"team {team.slug}'s first backup object")
            to_backup.append(time.perf_counter() - started)
            print(f"run {run + 1}: bare start {bare[-1]:.2f} s   create -> HTTP 200 {to_http[-1]:.2f} s   "
                  f"create -> first backup object {to_backup[-1]:.2f} s", flush=True)

    median = statistics.median
    print(f"\nmedian of {args.runs}:  bare Datasette start {median(bare):.2f} s   "
          f"create team -> first HTTP 200 {median(to_http):.2f} s   "
          f"create team -> first backup object in S3 {median(to_backup):.2f} s")
    print(f"ratio: {median(to_http) / median(bare):.2f}")


if __name__ == "__main__":
    main()
