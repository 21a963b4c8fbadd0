#!/usr/bin/env python
"""Zero failed requests through a fleet deploy: the embedded router holds what a restart refuses, in one run.

The embedded stack as `manage.py dev` runs it (local S3/STS, the control plane's server, the task worker, the
router) and one running team on the local backend. Each round, two clients ask `/-/databases.json` every 10 ms,
side by side: one through the router (`http://<slug>.localhost:<port>/`), one straight at the instance's own
address (with the headers the router sets); meanwhile a real fleet deploy (`deploys` services, a new image tag,
canary 1) restarts the team. Printed per path and round: requests, errors, the longest wait (the slowest answer),
the longest time without a 200 (the outage that path's user saw), and the restart's duration as the deploy
records it (its target's `started_at` -> `finished_at`: the old process stopped, the new one started and
answering its health check).

    .venv/bin/python bench/router_deploy.py [--rounds 3]

Targets: 0 errors through the router (exit 1 otherwise), and its longest wait bounded by the restart. Last line:
`ratio: <the router's longest wait / the restart's duration>`, the worst round (target at most 1.2). The
restart's clock starts before the old process is stopped and stops after the new one's health check and a
database write, so a held request normally ends inside it; the margin is for what falls on the router's side
only: its retry step (up to 50 ms after the new process listens), the held request's own answer, and the
scheduling delays of a 2-core machine shared with other work, together about a tenth of a ~1.2 s restart.
"""

import argparse
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.support.datasette import INSTANCE_BIN, answers, poll  # noqa: E402
from bench.support.embedded_stack import embedded_stack  # noqa: E402

INTERVAL = 0.01
PATH = "/-/databases.json"
TARGET = 1.2
ACTOR = "bench/router_deploy.py"


class Probe(threading.Thread):
    """A client asking `url` every 10 ms until told to stop; each request's outcome, how long it waited and when
    it was answered."""

    def __init__(self, url: str, headers: dict):
        super().__init__()
        self.url, self.headers = url, headers
        self.outcomes: list[tuple[int | str, float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=120) as client:
            while not self.done.is_set():
                started = time.perf_counter()
                try:
                    outcome = client.get(self.url, headers=self.headers).status_code
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                answered = time.perf_counter()
                self.outcomes.append((outcome, answered - started, answered))
                time.sleep(INTERVAL)

    def errors(self) -> list:
        return [outcome for outcome, _, _ in self.outcomes if outcome != 200]

    def longest_wait(self) -> float:
        return max(waited for _, waited, _ in self.outcomes)

    def longest_gap(self) -> float:
        """The longest time between two successive 200s: what a user of this path saw as the outage."""
        answered = [at for outcome, _, at in self.outcomes if outcome == 200]
        return max(later - earlier for earlier, later in zip(answered, answered[1:]))

    def last_answers_ok(self, count: int = 5) -> bool:
        return len(self.outcomes) >= count and all(outcome == 200 for outcome, _, _ in self.outcomes[-count:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")

    ratios, router_errors = [], 0
    with embedded_stack("router-deploy") as stack:
        from deploys.runner import run_deployment
        from deploys.services import start_deployment
        from instances.provisioning import instance_for
        from instances.services import create_team_and_provision
        from tests.routing import as_router

        team = create_team_and_provision("bench")
        poll(lambda: stack.signed_in(team), "the team's instance")
        url, headers = stack.through_router("bench", PATH)
        routed = (url, {**headers, **stack.signed_in(team)})
        poll(lambda: answers(*routed), "the team through the router")
        for round_number in range(1, args.rounds + 1):
            probes = {"router": Probe(*routed),
                      "direct": Probe(instance_for(team).url.rstrip("/") + PATH,
                                      {**as_router(team), **stack.signed_in(team)})}
            for probe in probes.values():
                probe.start()
            try:
                poll(lambda: all(probe.last_answers_ok() for probe in probes.values()), "the first answers")
                deployment = run_deployment(
                    start_deployment(f"bench-v{round_number + 1}", canary=1, concurrency=1,
                                     actor=ACTOR),
                    actor=ACTOR)
                poll(lambda: all(probe.last_answers_ok() for probe in probes.values()), "answers after the deploy")
            finally:
                for probe in probes.values():
                    probe.done.set()
                    probe.join()
            assert deployment.state == deployment.State.SUCCEEDED, deployment.message
            target = deployment.targets.get(team=team)
            restart = (target.finished_at - target.started_at).total_seconds()
            print(f"round {round_number}: restart {restart:.3f} s (deploy {deployment.image})")
            for name, probe in probes.items():
                print(f"  {name:>6}: {len(probe.outcomes)} requests, {len(probe.errors())} errors, "
                      f"longest wait {probe.longest_wait():.3f} s, longest without a 200 {probe.longest_gap():.3f} s",
                      flush=True)
            router_errors += len(probes["router"].errors())
            ratios.append(probes["router"].longest_wait() / restart)

    print(f"\nrounds {args.rounds}: router errors {router_errors}; router's longest wait / restart per round: "
          + ", ".join(f"{ratio:.2f}" for ratio in ratios) + f" (target at most {TARGET})")
    print(f"ratio: {max(ratios):.2f}")
    if router_errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
