"""Slow clients against the private API: other clients' exchanges with and without an attacker trickling bodies.

Run from the repository root: `.venv/bin/python bench/slow_clients.py` (or `make bench`).

All on 127.0.0.1, in a throw-away directory: a real SeaweedFS STS, a fresh SQLite state dir with teams and
their tokens, and the private API served as fly.toml's `private` process runs it (`python -m cloudctl.server`,
2 workers, default limits and timeouts). Then, in alternating rounds (unloaded, loaded, loaded, unloaded):

- other clients: BENCH_CONCURRENCY threads (from 127.0.0.1) exchanging tokens back to back on keep-alive
  connections; every exchange's latency is kept;
- loaded rounds add one attacker (from 127.0.0.2) that keeps 200 connections trickling: each declares a
  4,000-byte body and sends one byte of it every second; when the server answers (408, 429) or closes, it waits
  a second and opens the connection again. The attacker only runs during the loaded rounds.

The last line is `ratio: <loaded p99 / unloaded p99>` (target: at most 2). Exits 1 if any exchange fails.
Knobs: BENCH_CONCURRENCY (4), BENCH_ROUNDS (4), BENCH_ROUND_SECONDS (8), BENCH_ATTACKERS (200), BENCH_POOL, and
BENCH_SERVER=gunicorn to run the server it replaced (gunicorn gthread, 2 x 8 threads) instead: there the
exchanges stall behind the attacker and fail after BENCH_EXCHANGE_TIMEOUT (10) seconds.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from bench.support.private_api import (  # noqa: E402
    PATH, PrivateServer, create_teams, log, percentile, private_api_environ, raise_open_files_limit,
)
from cloudctl.local_s3 import LocalS3Server, free_port_set  # noqa: E402

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", 4))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 4))
ROUND_SECONDS = float(os.environ.get("BENCH_ROUND_SECONDS", 8))
ATTACKERS = int(os.environ.get("BENCH_ATTACKERS", 200))
# Each team sees a handful of exchanges, far below the default per-team rate limit (30/hour), which is kept.
POOL = int(os.environ.get("BENCH_POOL", 1500))
GUNICORN = os.environ.get("BENCH_SERVER", "cloudctl") == "gunicorn"
EXCHANGE_TIMEOUT = float(os.environ.get("BENCH_EXCHANGE_TIMEOUT", 10))
ATTACKER_SOURCE = "127.0.0.2"
DECLARED_BODY = 4000
TARGET = 2.0


class Attacker:
    """ATTACKERS connections from one address, each trickling a declared body a byte a second, reopened a second
    after the server answers or closes it. Runs on its own event loop thread until `stop()`."""

    def __init__(self, port: int, connections: int):
        self.port, self.connections = port, connections
        self.outcomes: Counter = Counter()
        self.trickling = 0
        self.most_trickling = 0
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None

    async def one(self) -> None:
        head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {DECLARED_BODY}\r\n\r\n").encode()
        while not self.stopping.is_set():
            writer = None
            counted = False
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(ATTACKER_SOURCE, 0))
                writer.write(head)
                self.trickling += 1
                counted = True
                self.most_trickling = max(self.most_trickling, self.trickling)
                answer = asyncio.ensure_future(reader.read(64))
                while not self.stopping.is_set():
                    done, _ = await asyncio.wait({answer}, timeout=1.0)
                    if done:
                        data = answer.result()
                        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.") else "closed"
                        self.outcomes[status] += 1
                        break
                    writer.write(b"s")
                answer.cancel()
            except OSError as error:
                self.outcomes[type(error).__name__] += 1
            finally:
                if counted:
                    self.trickling -= 1
                if writer is not None:
                    writer.close()
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=1.0)
            except TimeoutError:
                pass

    async def run(self, started: threading.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        tasks = [asyncio.create_task(self.one()) for _ in range(self.connections)]
        started.set()
        await asyncio.gather(*tasks)

    def start(self) -> None:
        started = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self.run(started),), daemon=True)
        self.thread.start()
        started.wait()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=30)


class TeamCycle:
    def __init__(self, teams: list[tuple[int, str]]):
        self.teams, self.next, self.lock = teams, 0, threading.Lock()

    def take(self) -> str:
        with self.lock:
            self.next += 1
            return self.teams[self.next % len(self.teams)][1]


def exchanges(port: int, teams: TeamCycle, seconds: float) -> tuple[list[float], Counter]:
    """CONCURRENCY threads exchanging back to back on keep-alive connections for `seconds`: the latency of each
    exchange (infinite for a failed one) and the failures."""
    latencies: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=EXCHANGE_TIMEOUT)
        mine, failed = [], Counter()
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                connection.request("POST", PATH, headers={"Authorization": f"Bearer {teams.take()}",
                                                          "Content-Length": "0"})
                response = connection.getresponse()
                body = response.read()
                if response.status == 200 and json.loads(body).get("SessionToken"):
                    mine.append(time.perf_counter() - started)
                    continue
                failed[f"HTTP {response.status}"] += 1
            except (OSError, http.client.HTTPException) as error:
                failed[type(error).__name__] += 1
                connection.close()
            mine.append(math.inf)  # an exchange that failed never completed: it counts as infinitely slow
        connection.close()
        with lock:
            latencies.extend(mine)
            errors.update(failed)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def row(name: str, latencies: list[float], errors: Counter) -> str:
    values = latencies or [float("nan")]
    return (f"{name:<34}{sum(map(math.isfinite, latencies)):>8}{1000 * statistics.median(values):>9.1f}"
            f"{1000 * percentile(values, 99):>9.1f}{sum(errors.values()):>8}")


def main() -> int:
    raise_open_files_limit()
    work = Path(tempfile.mkdtemp(prefix="cloudctl-bench-slow-"))
    s3: LocalS3Server | None = None
    api: PrivateServer | None = None
    try:
        began = time.monotonic()
        log(f"cpus: {os.cpu_count()}  clients: {CONCURRENCY}  rounds: {ROUNDS} x {ROUND_SECONDS:g}s  "
            f"attacker: {ATTACKERS} trickling connections from {ATTACKER_SOURCE}  "
            f"server: {'gunicorn gthread 2 x 8' if GUNICORN else 'cloudctl.server'}")
        s3 = LocalS3Server(work / "seaweedfs", ports=free_port_set())
        config = s3.start()
        env = private_api_environ(config, work)
        teams = TeamCycle(create_teams(POOL, env, work))
        api = PrivateServer(env, work, gunicorn=GUNICORN)
        api.wait_ready()
        log(f"private API ready at {api.url}  (setup {time.monotonic() - began:.1f}s)")
        exchanges(api.port, teams, 1.5)  # warm up every worker and thread

        results = {"unloaded": ([], Counter()), "loaded": ([], Counter())}
        attack: Counter = Counter()
        most_trickling = 0
        for number in range(ROUNDS):
            loaded = number % 4 in (1, 2)
            attacker = None
            if loaded:
                attacker = Attacker(api.port, ATTACKERS)
                attacker.start()
                time.sleep(2.0)  # every attacking connection opened (or refused) before measuring
            latencies, errors = exchanges(api.port, teams, ROUND_SECONDS)
            if attacker:
                held_now = attacker.trickling
                attacker.stop()
                attack.update(attacker.outcomes)
                most_trickling = max(most_trickling, attacker.most_trickling)
            side = "loaded" if loaded else "unloaded"
            results[side][0].extend(latencies)
            results[side][1].update(errors)
            log(f"  round {number + 1} ({side}): {sum(map(math.isfinite, latencies))} exchanges, p99 "
                f"{1000 * percentile(latencies, 99):.1f} ms" + (f", attacker connections open: {held_now}" if loaded else ""))

        log("")
        header = f"{'':<34}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        log(header)
        log("-" * len(header))
        log(row("exchanges, no attacker", *results["unloaded"]))
        log(row(f"exchanges, {ATTACKERS} trickling", *results["loaded"]))
        log("-" * len(header))
        log(f"attacker: at most {most_trickling} connections open at once; answers to its connections: "
            + ", ".join(f"{status}: {count}" for status, count in sorted(attack.items())))
        failures = {side: dict(errors) for side, (_, errors) in results.items() if errors}
        if failures:
            log(f"exchange errors: {failures}\n--- server log (tail) ---\n{api.tail()}\n---")
        ratio = percentile(results["loaded"][0], 99) / percentile(results["unloaded"][0], 99)
        log(f"target ratio <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'};  total {time.monotonic() - began:.0f}s")
        log(f"ratio: {ratio:.3f}")
        return 1 if failures else 0
    finally:
        if api is not None:
            api.stop()
        if s3 is not None:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())
