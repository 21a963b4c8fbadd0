#!/usr/bin/env python
"""The sign-in gate's cost (instance/plugins/team_auth.py): the same Datasette with and without it, in one run.

Two Datasettes of the instance virtualenv serve the same small table: one bare (no plugin, Datasette's default
anonymous access), one with the instance's plugins directory and `--default-deny`, as a team's instance runs it
(instance/entrypoint.py), re-validating its actor with a control plane on 127.0.0.1. The signed-in one is asked
with a member's `ds_actor` cookie: after the first request, every one is a cache hit (no network), so what is
measured is the gate (cookie check, cache lookup) and the roles' permission rules, which Datasette turns into a
query of its internal database per check. Alternating rounds:
- latency: one client, one kept-alive connection, requests one after another: p50 and p90 of each;
- throughput: `--concurrency` clients for `--seconds` each: requests per second of each (median of the rounds).

Run alone, the control plane is a fake of its sign-in endpoints (tests/instance_sso.py); bench/sso.py runs the
same comparison against the real one, with a grant redeemed from a real code.

    .venv/bin/python bench/team_auth.py [--requests 2000] [--concurrency 16] [--seconds 2]

Target: at most 1.1 (p50 latency with the gate / without). Last line: `ratio: <that ratio>`.
"""

import argparse
import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.router import latencies, throughput, wait_for_port  # noqa: E402
from bench.support.datasette import INSTANCE_BIN, free_port  # noqa: E402
from bench.support.private_api import percentile  # noqa: E402

PATH = "/data/items.json?_size=20"
ROUNDS = 10
SECRET = "bench-datasette-secret"


def per_request(*, control_plane_url: str, team_id: str, team_token: str, cookie: str, requests: int,
                concurrency: int, seconds: float) -> dict:
    """Both Datasettes measured in alternating rounds; `cookie` is the member's `ds_actor`, signed with SECRET.
    Returns p50 and p90 of each (ms), requests per second of each, and the latency ratio (p50 gated / bare)."""
    work = Path(tempfile.mkdtemp(prefix="cloudctl-bench-team-auth-"))
    database = work / "data.db"
    with sqlite3.connect(database) as db:
        db.execute("create table items (id integer primary key, name text, price real)")
        db.executemany("insert into items (name, price) values (?, ?)", [(f"item {n}", n * 1.5) for n in range(500)])
    bare_port, gated_port = free_port(), free_port()
    gated_env = {"PATH": os.environ["PATH"], "DATASETTE_SECRET": SECRET, "CLOUDCTL_TEAM_ID": team_id,
                 "CLOUDCTL_TEAM_URL": f"http://127.0.0.1:{gated_port}/",
                 "CLOUDCTL_SSO_AUTHORIZE_URL": f"{control_plane_url}/sso/authorize", "CLOUDCTL_URL": control_plane_url,
                 "CLOUDCTL_TOKEN": team_token, "CLOUDCTL_SSO_REVALIDATE_SECONDS": "60"}
    serve = [str(INSTANCE_BIN / "datasette"), "serve", str(database), "-h", "127.0.0.1"]
    children = [
        subprocess.Popen([*serve, "-p", str(bare_port)], env={"PATH": os.environ["PATH"]},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
        subprocess.Popen([*serve, "-p", str(gated_port), "--plugins-dir", str(REPO / "instance" / "plugins"),
                          "--default-deny"], env=gated_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True),
    ]
    try:
        wait_for_port(bare_port)
        wait_for_port(gated_port)
        targets = {"bare": (f"http://127.0.0.1:{bare_port}{PATH}", {}),
                   "gated": (f"http://127.0.0.1:{gated_port}{PATH}", {"Cookie": f"ds_actor={cookie}"})}
        per_round = requests // ROUNDS
        taken = {"bare": [], "gated": []}
        rates = {"bare": [], "gated": []}
        for round_number in range(ROUNDS):
            p50 = {}
            for name in ("bare", "gated") if round_number % 2 == 0 else ("gated", "bare"):
                this_round = asyncio.run(latencies(*targets[name], per_round))
                taken[name] += this_round
                p50[name] = statistics.median(this_round) * 1000
                rates[name].append(asyncio.run(throughput(*targets[name], concurrency, seconds)))
            print(f"round {round_number + 1}: p50 bare {p50['bare']:.2f} ms, gated {p50['gated']:.2f} ms; "
                  f"throughput bare {rates['bare'][-1]:.0f}/s, gated {rates['gated'][-1]:.0f}/s", flush=True)
    finally:
        for child in children:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
    result = {name: {"p50": percentile(values, 50) * 1000, "p90": percentile(values, 90) * 1000,
                     "rate": statistics.median(rates[name])} for name, values in taken.items()}
    result["ratio"] = result["gated"]["p50"] / result["bare"]["p50"]
    return result


def report(result: dict, concurrency: int) -> None:
    bare, gated = result["bare"], result["gated"]
    print(f"per request, one kept-alive client: bare p50 {bare['p50']:.2f} ms, p90 {bare['p90']:.2f} ms; "
          f"signed in p50 {gated['p50']:.2f} ms, p90 {gated['p90']:.2f} ms (p50 ratio {result['ratio']:.2f}, "
          f"p90 ratio {gated['p90'] / bare['p90']:.2f}, target <= 1.1)")
    print(f"throughput ({concurrency} clients): bare {bare['rate']:.0f}/s, signed in {gated['rate']:.0f}/s "
          f"(ratio {bare['rate'] / gated['rate']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")
    from tests.instance_sso import FakeSSO, actor_cookie, member

    token = "bench-team-token"
    with FakeSSO(team_token=token, everyone=member("bench-user", "viewer")) as fake:
        result = per_request(control_plane_url=fake.url, team_id="1", team_token=token,
                             cookie=actor_cookie(SECRET, user_id="bench-user", grant="bench-grant"),
                             requests=args.requests, concurrency=args.concurrency, seconds=args.seconds)
        revalidations = fake.revalidations(session="bench-grant")
    print()
    report(result, args.concurrency)
    print(f"revalidations asked of the control plane: {revalidations} (at most one a minute; the rest hit the cache)")
    print(f"ratio: {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
