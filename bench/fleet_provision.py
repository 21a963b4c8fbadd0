#!/usr/bin/env python
"""Provision 1,000 teams on the fake Fly Machines API with realistic latencies and Fly's rate limits.

Prints the wall time next to the bound the latencies and limits allow at the chosen concurrency, and the API
calls per team next to the minimum. The fake runs in its own process (it checks every body against Fly's
OpenAPI spec, which costs CPU that must not be charged to cloudctl).

    .venv/bin/python bench/fleet_provision.py [--teams 1000] [--concurrency 50]

Last line: `ratio: <wall time / bound>` (target: at most 1.25).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.fakefly_fleet import configure_django, counting_client, start_fake  # noqa: E402

# One team's critical path on the fake's default latencies (fakefly.Latencies): create app, set the secret,
# create the volume, create the machine (1-2 s, 1.5 on average), then the machine starts (1 s).
CRITICAL_PATH_SECONDS = 0.3 + 0.3 + 0.5 + 1.5 + 1.0
# The calls no provisioning can do without: app, secret, volume, machine, and one wait for it to start.
MINIMUM_CALLS_PER_TEAM = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()

    fake, url = start_fake()
    try:
        with tempfile.TemporaryDirectory(prefix="cloudctl-bench-") as state_dir:
            configure_django(state_dir, url)
            from instances import machines
            from instances.backends import fly
            from instances.fleet import provision_fleet
            from instances.models import Instance
            from teams.models import Team

            client, counts = counting_client(args.concurrency)
            fly.make_client = lambda api_url, api_token: client
            machines.get_backend.cache_clear()
            Team.objects.bulk_create(Team(slug=f"bench-{n:05d}", name=f"Bench {n}") for n in range(args.teams))
            teams = list(Team.objects.order_by("pk"))

            from tqdm import tqdm

            started = time.perf_counter()
            with tqdm(total=len(teams), unit="team", desc="provisioning", file=sys.stderr) as bar:
                result = provision_fleet(teams, actor="bench", concurrency=args.concurrency,
                                         progress=lambda team, outcome: bar.update())
            wall = time.perf_counter() - started
            running = Instance.objects.filter(state=Instance.State.RUNNING).count()
    finally:
        fake.terminate()
        fake.wait()

    bound = args.teams * CRITICAL_PATH_SECONDS / args.concurrency
    calls_per_team = counts["requests"] / args.teams
    print(f"teams: {args.teams}, concurrency: {args.concurrency}")
    print(f"running: {running}, failed: {len(result.failed)}")
    print(f"wall time: {wall:.1f} s   bound: {bound:.1f} s "
          f"({args.teams} teams x {CRITICAL_PATH_SECONDS:.1f} s critical path / {args.concurrency} at a time; "
          f"Fly's per-(action, id) limits never bind: every team has its own app and machine)")
    print(f"API calls per team: {calls_per_team:.2f}   minimum: {MINIMUM_CALLS_PER_TEAM} "
          f"(the rest are the look-before-create reads that make every create safe to retry)")
    print(f"429 answers received (all retried): {counts['status 429']}; teams failed: {len(result.failed)}")
    print(f"ratio: {wall / bound:.2f}")


if __name__ == "__main__":
    main()
