#!/usr/bin/env python
"""Deploy a new image to 1,000 teams on the fake Fly Machines API, with Fly's latencies and rate limits.

The fleet is a realistic mix: most teams scaled to zero (stopped, some suspended), the rest running (busy teams:
their traffic keeps Fly's autostop away, so the fake's autostop is off). A running team's update restarts it (the
fake's `update` latency) and must then pass its health checks, which first run a grace period (20 s, the team
config's) after the start (plus the fake's `health`); a stopped one is updated without starting. Every answer
also carries a network round trip (`--request-latency`). Fly's real durations, not scaled.

Printed side by side, in one run:
- the wall time of `manage.py deploy`'s code path (canary, then one wave, `--concurrency` at a time);
- the bound: the canary's own critical path, then every other team's critical path (its latencies and the
  fewest API calls an update needs) spread over `--concurrency`, or the longest one if that is longer (a
  small fleet). Fly's rate limits (per action and Machine) never bind: each Machine sees one update;
- a one-machine-at-a-time baseline, measured on a sample of the same mix and scaled to the whole fleet.

    .venv/bin/python bench/deploy.py [--teams 1000] [--concurrency 50]

Last line: `ratio: <wall time / bound>` (target: at most 1.25).
"""

import argparse
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.fakefly_fleet import configure_django, counting_client, start_fake  # noqa: E402
from fakefly import Latencies  # noqa: E402
from fakefly.app import duration_seconds  # noqa: E402

NEW_IMAGE = "registry.fly.io/cloudctl-team:v2"
BASELINE_IMAGE = "registry.fly.io/cloudctl-team:v3"
# Fails its health checks on the fake: the deployment must halt after the canary and roll it back.
BAD_IMAGE = "registry.fly.io/cloudctl-team:broken"
# How long an updated Machine may take to pass its checks (CLOUDCTL_FLY_HEALTH_TIMEOUT): past the 20 s grace
# period with room to spare, and short enough that the bad image's canary fails within a minute.
HEALTH_TIMEOUT_SECONDS = 45
# The fewest calls an update can make: a read of its health before (an unhealthy team is skipped), then lease,
# read, update, wait until started, release, one read of its checks (running); lease, read, update, release, one
# read back (stopped). Lease refreshes and repeated health reads overlap the waits, so they add no time to the
# critical path.
MINIMUM_CALLS = {"running": 7, "stopped": 6}


def critical_path(kind: str, request_latency: float) -> float:
    from instances.backends.fly import HEALTH_GRACE_PERIOD

    latencies = Latencies()
    restart = (latencies.update + duration_seconds(HEALTH_GRACE_PERIOD) + latencies.health if kind == "running"
               else 0.0)
    return restart + MINIMUM_CALLS[kind] * request_latency


def build_fleet(teams: int, running_share: float, suspended_share: float) -> dict[int, str]:
    """Provision the fleet (not timed), then scale most of it to zero; returns each team's kind."""
    from instances.machines import get_backend
    from instances.fleet import provision_fleet
    from instances.provisioning import instance_for
    from teams.models import Team

    Team.objects.bulk_create(Team(slug=f"bench-{n:05d}", name=f"Bench {n}") for n in range(teams))
    fleet = list(Team.objects.order_by("pk"))
    result = provision_fleet(fleet, concurrency=100, actor="bench")
    assert not result.failed, f"setting up the fleet failed: {result.failed}"
    backend = get_backend()
    running_every, suspended_every = round(1 / running_share), round(1 / suspended_share)
    kinds = {team.pk: "running" if n % running_every == 0 else "stopped" for n, team in enumerate(fleet)}

    def scale_to_zero(numbered):
        n, team = numbered
        if kinds[team.pk] == "running":
            return
        instance = instance_for(team)
        app, machine = instance.resources["app"], instance.resources["machine"]
        if n % suspended_every == 1:
            backend.client.suspend(app, machine)
            backend.client.wait(app, machine, "suspended")
        else:
            backend.stop(instance)

    with ThreadPoolExecutor(max_workers=100) as pool:
        list(pool.map(scale_to_zero, enumerate(fleet)))
    return kinds


def timed_deploy(image: str, concurrency: int, slugs=None, progress_label: str = "") -> tuple[float, object]:
    from tqdm import tqdm

    from deploys.runner import run_deployment
    from deploys.services import start_deployment

    deployment = start_deployment(image, slugs=slugs, canary=1, concurrency=concurrency, actor="bench")
    total = deployment.targets.exclude(step="skipped").count()
    with tqdm(total=total, unit="team", desc=progress_label, file=sys.stderr) as bar:
        started = time.perf_counter()
        deployment = run_deployment(deployment, progress=lambda target: bar.update(), actor="bench")
        wall = time.perf_counter() - started
    return wall, deployment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--running", type=float, default=0.3, help="share of teams running (default 0.3)")
    parser.add_argument("--suspended", type=float, default=0.1, help="share of teams suspended (default 0.1)")
    parser.add_argument("--request-latency", type=float, default=0.05,
                        help="seconds of network round trip per API call (default 0.05)")
    parser.add_argument("--baseline-sample", type=int, default=30,
                        help="teams deployed one at a time for the baseline (default 30)")
    args = parser.parse_args()

    # The fake still checks every request against Fly's spec; checking its own answers too (as the tests do)
    # would spend the CPU this machine shares with cloudctl.
    fake, url = start_fake("--request-latency", str(args.request_latency), "--no-response-check",
                           "--autostop-idle", "0", "--unhealthy-image", BAD_IMAGE)
    os.environ["CLOUDCTL_FLY_HEALTH_TIMEOUT"] = str(HEALTH_TIMEOUT_SECONDS)
    try:
        with tempfile.TemporaryDirectory(prefix="cloudctl-bench-") as state_dir:
            configure_django(state_dir, url)
            from deploys.models import Deployment
            from instances import machines
            from instances.backends import fly
            from instances.models import Instance
            from teams.models import Team

            client, counts = counting_client(args.concurrency * 2)
            fly.make_client = lambda api_url, api_token: client
            machines.get_backend.cache_clear()
            print(f"setting up {args.teams} teams (not timed)...", file=sys.stderr)
            kinds = build_fleet(args.teams, args.running, args.suspended)
            machine_states_before = {team_id: fly_state(client, team_id) for team_id in sample_ids(kinds, 40)}

            counts.clear()
            wall, deployment = timed_deploy(NEW_IMAGE, args.concurrency, progress_label="deploying")
            calls = counts["requests"]
            throttled = counts["status 429"]
            on_new = Instance.objects.filter(image=NEW_IMAGE).count()
            stayed = sum(fly_state(client, team_id) == state for team_id, state in machine_states_before.items())

            sample = random.Random(0).sample(list(Team.objects.values_list("slug", flat=True)),
                                             min(args.baseline_sample, args.teams))
            sample_wall, _ = timed_deploy(BASELINE_IMAGE, 1, slugs=sample, progress_label="baseline")
            baseline = sample_wall * args.teams / len(sample)
            bad = bad_image_deploy(args.concurrency)
    finally:
        fake.terminate()
        fake.wait()

    canary_id = deployment.targets.get(wave=0).team_id
    paths = {team_id: critical_path(kind, args.request_latency) for team_id, kind in kinds.items()}
    # A wave cannot end before its longest team, nor before its team-seconds spread over the workers.
    wave = [path for team_id, path in paths.items() if team_id != canary_id]
    bound = paths[canary_id] + max(max(wave), sum(wave) / args.concurrency)
    running = sum(kind == "running" for kind in kinds.values())
    print(f"teams: {args.teams} ({running} running, {args.teams - running} scaled to zero), "
          f"concurrency: {args.concurrency}, round trip: {args.request_latency * 1000:.0f} ms")
    print(f"deployment: {deployment.get_state_display()} - {deployment.message}; {on_new} teams on {NEW_IMAGE}; "
          f"sampled machines in their state before: {stayed}/{len(machine_states_before)}")
    print(f"wall time: {wall:.1f} s   bound: {bound:.1f} s (canary {paths[canary_id]:.2f} s, then the longer of "
          f"{max(wave):.1f} s and {sum(wave):.0f} team-seconds / {args.concurrency})   "
          f"one at a time: {baseline:.0f} s (measured on {len(sample)} teams, scaled): {baseline / wall:.0f}x faster")
    print(f"API calls per team: {calls / args.teams:.2f}   429 answers (all retried): {throttled}")
    print(f"bad image: {bad}")
    assert deployment.state == Deployment.State.SUCCEEDED and on_new == args.teams
    print(f"ratio: {wall / bound:.2f}")


def bad_image_deploy(concurrency: int) -> str:
    """An image whose checks fail, with a canary of one: the deployment halts after the canary, rolls it back
    to its own image, and touches no other team (not timed)."""
    from deploys.models import Deployment, DeploymentTarget
    from instances.models import Instance

    before = dict(Instance.objects.values_list("team_id", "image"))
    wall, deployment = timed_deploy(BAD_IMAGE, concurrency, progress_label="bad image")
    canary = deployment.targets.get(wave=0)
    assert deployment.state == Deployment.State.HALTED, deployment.message
    assert canary.step == DeploymentTarget.Step.ROLLED_BACK and "not healthy" in canary.error, canary.error
    assert dict(Instance.objects.values_list("team_id", "image")) == before
    assert not deployment.targets.exclude(wave=0).exclude(step=DeploymentTarget.Step.PENDING).exists()
    return f"halted after the canary in {wall:.0f} s, canary rolled back to {before[canary.team_id]} ({canary.error})"


def sample_ids(kinds: dict[int, str], size: int) -> list[int]:
    ids = sorted(kinds)
    return ids[:: max(1, len(ids) // size)]


def fly_state(client, team_id: int) -> str:
    from instances.models import Instance

    resources = Instance.objects.get(team_id=team_id).resources
    state = client.get_machine(resources["app"], resources["machine"]).state
    return "stopped" if state == "suspended" else state  # an update drops a suspended snapshot: it stays down


if __name__ == "__main__":
    main()
