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
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")

    with embedded_stack("wake") as stack:
        import httpx

        from instances.lifecycle import stop_instance
        from instances.services import create_team_and_provision

        team = create_team_and_provision("bench")
        poll(lambda: stack.signed_in(team), "the team's instance")
        url, headers = stack.through_router("bench")
        through_router = (url, {**headers, **stack.signed_in(team)})
        poll(lambda: answers(*through_router), "the team through the router")
        bare, wake = [], []
        for run in range(args.runs):
            bare.append(bare_start(stack.work))
            stop_instance(team, actor="bench/wake.py")
            started = time.perf_counter()
            with httpx.stream("GET", through_router[0], headers=through_router[1], timeout=120) as response:
                wake.append(time.perf_counter() - started)
                assert response.status_code == 200, response.status_code
            print(f"run {run + 1}: bare start {bare[-1]:.2f} s   wake -> first byte {wake[-1]:.2f} s", flush=True)
            # The start the router queued finishes (its health read) before the next stop.
            poll(lambda: not team.actions.filter(status__in=["queued", "running"]).exists(), "the start to finish")

    median = statistics.median
    print(f"\nmedian of {args.runs}:  bare Datasette start {median(bare):.2f} s   "
          f"wake through the router -> first byte {median(wake):.2f} s")
    print(f"ratio: {median(wake) / median(bare):.2f}")


if __name__ == "__main__":
    main()
