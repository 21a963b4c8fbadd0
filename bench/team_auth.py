#!/usr/bin/env python
"""The sign-in gate's cost (instance/plugins/team_auth.py): the same Datasette with and without it, in one run.

Two Datasettes of the instance virtualenv serve the same small table: one bare (no plugin, Datasette's default
anonymous access), one with the instance's plugins directory, as a team's instance runs it, re-validating its
actor with a fake control plane on 127.0.0.1 (tests/instance_sso.py). The signed-in one is asked with a member's
`ds_actor` cookie: after the first request, every one is a cache hit (no network), so what is measured is the
gate (cookie check, cache lookup) and the role-to-permission hook. Alternating rounds:
- latency: one client, one kept-alive connection, requests one after another: p50 of each;
- throughput: `--concurrency` clients for `--seconds` each: requests per second of each.

    .venv/bin/python bench/team_auth.py [--requests 2000] [--concurrency 16] [--seconds 5]

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
from tests.instance_sso import FakeSSO, actor_cookie, member  # noqa: E402

PATH = "/data/items.json?_size=20"
ROUNDS = 3
SECRET = "bench-datasette-secret"
TOKEN = "bench-team-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")

    work = Path(tempfile.mkdtemp(prefix="cloudctl-bench-team-auth-"))
    database = work / "data.db"
    with sqlite3.connect(database) as db:
        db.execute("create table items (id integer primary key, name text, price real)")
        db.executemany("insert into items (name, price) values (?, ?)", [(f"item {n}", n * 1.5) for n in range(500)])
    bare_port, gated_port = free_port(), free_port()
    with FakeSSO(team_token=TOKEN, everyone=member("bench-user", "viewer")) as fake:
        gated_env = {"PATH": os.environ["PATH"], "DATASETTE_SECRET": SECRET, "CLOUDCTL_TEAM_ID": "1",
                     "CLOUDCTL_TEAM_URL": f"http://127.0.0.1:{gated_port}/",
                     "CLOUDCTL_SSO_AUTHORIZE_URL": "http://127.0.0.1:9/sso/authorize", "CLOUDCTL_URL": fake.url,
                     "CLOUDCTL_TOKEN": TOKEN, "CLOUDCTL_SSO_REVALIDATE_SECONDS": "60"}
        serve = [str(INSTANCE_BIN / "datasette"), "serve", str(database), "-h", "127.0.0.1"]
        children = [
            subprocess.Popen([*serve, "-p", str(bare_port)], env={"PATH": os.environ["PATH"]},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
            subprocess.Popen([*serve, "-p", str(gated_port), "--plugins-dir", str(REPO / "instance" / "plugins")],
                             env=gated_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True),
        ]
        try:
            wait_for_port(bare_port)
            wait_for_port(gated_port)
            cookie = actor_cookie(SECRET, user_id="bench-user", grant="bench-grant")
            targets = {"bare": (f"http://127.0.0.1:{bare_port}{PATH}", {}),
                       "gated": (f"http://127.0.0.1:{gated_port}{PATH}", {"Cookie": f"ds_actor={cookie}"})}
            per_round = args.requests // ROUNDS
            taken = {"bare": [], "gated": []}
            rates = {"bare": [], "gated": []}
            for round_number in range(ROUNDS):
                for name in ("bare", "gated") if round_number % 2 == 0 else ("gated", "bare"):
                    taken[name] += asyncio.run(latencies(*targets[name], per_round))
                    rates[name].append(asyncio.run(throughput(*targets[name], args.concurrency, args.seconds)))
                print(f"round {round_number + 1}: throughput bare {rates['bare'][-1]:.0f}/s, "
                      f"gated {rates['gated'][-1]:.0f}/s", flush=True)
            revalidations = sum(1 for request in fake.requests if request["body"] == {"session": "bench-grant"})
        finally:
            for child in children:
                os.killpg(child.pid, signal.SIGTERM)
                child.wait()

    p50 = {name: statistics.median(values) * 1000 for name, values in taken.items()}
    rate = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\np50 latency: bare {p50['bare']:.2f} ms, gated {p50['gated']:.2f} ms; throughput ({args.concurrency} "
          f"clients): bare {rate['bare']:.0f}/s, gated {rate['gated']:.0f}/s (ratio {rate['bare'] / rate['gated']:.2f})")
    print(f"revalidations asked of the control plane: {revalidations} (at most one a minute; the rest hit the cache)")
    print(f"ratio: {p50['gated'] / p50['bare']:.2f}")


if __name__ == "__main__":
    main()
