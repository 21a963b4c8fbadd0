#!/usr/bin/env python
"""The embedded router's cost: the same Datasette asked directly and through the router, in one run.

One Datasette (the instance virtualenv's, with the instance's plugins loaded, as a team's instance runs it: the
router guard, and the sign-in gate with a fake control plane confirming the bench's member, see
bench/team_auth.py for the gate's own cost) serves a small table. The router (`python -m router.server --mode embedded`, as `manage.py dev` runs it) routes
`bench.localhost` to it from a SQLite routing table. Direct requests carry the headers the router would set, so
the guard's cost is on both sides; both carry the member's cookie. Alternating rounds:
- latency: one client, one kept-alive connection, requests one after another: p50 of each path;
- throughput: `--concurrency` clients for `--seconds` each: requests per second of each path.

    .venv/bin/python bench/router.py [--requests 2000] [--concurrency 16] [--seconds 5]

Targets: p50 latency ratio (router / direct) at most 1.15, throughput ratio at least 0.85.
Last line: `ratio: <throughput through the router / direct>`.
"""

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
INSTANCE_BIN = REPO / ".venv-instance" / "bin"
PATH = "/data/items.json?_size=20"
ROUNDS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, deadline: float = 60) -> None:
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def latencies(url: str, headers: dict, count: int) -> list[float]:
    import httpx

    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        (await client.get(url)).raise_for_status()
        taken = []
        for _ in range(count):
            started = time.perf_counter()
            response = await client.get(url)
            taken.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
    return taken


async def throughput(url: str, headers: dict, concurrency: int, seconds: float) -> float:
    import httpx

    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
        stop = time.perf_counter() + seconds

        async def one_client():
            nonlocal done
            while time.perf_counter() < stop:
                response = await client.get(url)
                assert response.status_code == 200, response.status_code
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if not (INSTANCE_BIN / "datasette").exists():
        sys.exit("the instance virtualenv is missing: run `make instance-venv`")

    work = Path(tempfile.mkdtemp(prefix="cloudctl-bench-router-"))
    os.environ.update({"DJANGO_SETTINGS_MODULE": "cloudctl.settings", "CLOUDCTL_STATE_DIR": str(work / "state"),
                       "CLOUDCTL_TEAMS_DOMAIN": "localhost", "CLOUDCTL_LOG_LEVEL": "WARNING"})
    import django

    django.setup()
    from django.core.management import call_command

    from instances.models import Instance
    from teams.models import Team
    from teams.routing import routing_secret

    call_command("migrate", verbosity=0)
    database = work / "data.db"
    with sqlite3.connect(database) as db:
        db.execute("create table items (id integer primary key, name text, price real)")
        db.executemany("insert into items (name, price) values (?, ?)", [(f"item {n}", n * 1.5) for n in range(500)])
    team = Team.objects.create(slug="bench", name="bench")
    secret = routing_secret(team.pk)
    datasette_port, router_port = free_port(), free_port()
    datasette_url = f"http://127.0.0.1:{datasette_port}/"
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend", state=Instance.State.RUNNING,
                            url=datasette_url, resources={"port": datasette_port, "url": datasette_url})
    from tests.instance_sso import FakeSSO, actor_cookie, member

    fake = FakeSSO(team_token="bench-team-token", everyone=member("bench-user", "viewer")).__enter__()
    datasette_env = {"PATH": os.environ["PATH"], "CLOUDCTL_ROUTING_SECRET": secret,
                     "CLOUDCTL_HOSTNAME": "bench.localhost", "DATASETTE_SECRET": "bench-datasette-secret",
                     "CLOUDCTL_TEAM_ID": str(team.pk), "CLOUDCTL_TEAM_URL": "http://bench.localhost/",
                     "CLOUDCTL_SSO_AUTHORIZE_URL": "http://127.0.0.1:9/sso/authorize", "CLOUDCTL_URL": fake.url,
                     "CLOUDCTL_TOKEN": "bench-team-token"}
    signed_in = {"Cookie": "ds_actor=" + actor_cookie("bench-datasette-secret", user_id="bench-user",
                                                     grant="bench-grant")}
    children = [
        subprocess.Popen([str(INSTANCE_BIN / "datasette"), "serve", str(database), "-h", "127.0.0.1",
                          "-p", str(datasette_port), "--plugins-dir", str(REPO / "instance" / "plugins"),
                          "--default-deny"],
                         env=datasette_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "router.server", "--bind", f"127.0.0.1:{router_port}",
                          "--mode", "embedded"], cwd=REPO, start_new_session=True),
    ]
    try:
        wait_for_port(datasette_port)
        wait_for_port(router_port)
        direct = (f"{datasette_url.rstrip('/')}{PATH}",
                  {"Host": "bench.localhost", "fly-replay-src": f"instance=bench;state={secret}", **signed_in})
        routed = (f"http://127.0.0.1:{router_port}{PATH}", {"Host": f"bench.localhost:{router_port}", **signed_in})
        per_round = args.requests // ROUNDS
        taken = {"direct": [], "router": []}
        rates = {"direct": [], "router": []}
        for round_number in range(ROUNDS):
            for name, (url, headers) in (("direct", direct), ("router", routed)):
                taken[name] += asyncio.run(latencies(url, headers, per_round))
            for name, (url, headers) in (("router", routed), ("direct", direct)):
                rates[name].append(asyncio.run(throughput(url, headers, args.concurrency, args.seconds)))
            print(f"round {round_number + 1}: throughput direct {rates['direct'][-1]:.0f}/s, "
                  f"router {rates['router'][-1]:.0f}/s", flush=True)
    finally:
        for child in children:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
        fake.__exit__(None, None, None)

    p50 = {name: statistics.median(values) * 1000 for name, values in taken.items()}
    rate = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\np50 latency: direct {p50['direct']:.2f} ms, through the router {p50['router']:.2f} ms "
          f"(ratio {p50['router'] / p50['direct']:.2f}, target <= 1.15)")
    print(f"throughput ({args.concurrency} clients): direct {rate['direct']:.0f}/s, through the router "
          f"{rate['router']:.0f}/s (target >= 0.85)")
    print(f"ratio: {rate['router'] / rate['direct']:.2f}")


if __name__ == "__main__":
    main()
