"""Credential exchange throughput: the private API under its own server against raw STS AssumeRole.

Run from the repository root: `.venv/bin/python bench/credentials.py` (or `make bench`).

What it does, all on 127.0.0.1 and in a throw-away directory:

1. starts a real SeaweedFS S3 + STS (`cloudctl.local_s3.LocalS3Server`, free ports), a fresh SQLite state
   dir, migrates it and creates teams with their tokens and running instances;
2. serves the private API only (`CLOUDCTL_URLCONF=cloudctl.urls_private`) as fly.toml's `private` process
   does: `python -m cloudctl.server` (uvicorn, 2 workers x CLOUDCTL_SERVER_THREADS 8 threads);
3. phase 1, side by side at the same concurrency: raw `AssumeRole` calls (the broker's exact request: role,
   session name, 12 h, the team's session policy, source identity and tag) from one shared boto3 client vs.
   `POST /private/v1/credentials` (one keep-alive HTTP client per thread, each exchange naming its team's boot
   as an instance's renewals do). The two alternate over several short rounds so that noise on this shared
   machine hits both alike;
4. phase 2, a fleet restarting at once: 1,000 exchanges for 1,000 distinct teams fired together, each naming a
   new boot (recorded) from its own loopback address (127.1.x.y) as each team machine has its own; every one
   must succeed.

The last line is `ratio: <endpoint exchanges/s / raw AssumeRole/s>` (target: at least 0.7). The script exits 1
if any exchange fails (the ratio line is still printed last), and stops the server and SeaweedFS whatever happens.
Knobs for experiments: BENCH_CONCURRENCY, BENCH_ROUNDS, BENCH_ROUND_SECONDS, BENCH_BURST, BENCH_POOL,
BENCH_SERVER_WORKERS, BENCH_SERVER_THREADS.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# This file is bench/credentials.py: keep its own directory off the path so `credentials` is the app.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from bench.support.private_api import (  # noqa: E402
    PATH, PrivateServer, create_teams, log, percentile, private_api_environ, raise_open_files_limit,
)
from cloudctl.local_s3 import ROLE_ARN, LocalS3Server, free_port_set  # noqa: E402
from credentials.policy import policy_document, team_session_policy  # noqa: E402

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", 8))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 4))
ROUND_SECONDS = float(os.environ.get("BENCH_ROUND_SECONDS", 5))
BURST = int(os.environ.get("BENCH_BURST", 1000))
# Teams cycled through in phase 1: each sees a handful of exchanges, as in production, and stays far below the
# default per-team rate limit (30/hour), which the bench keeps.
POOL = int(os.environ.get("BENCH_POOL", 2000))
SERVER_WORKERS = int(os.environ.get("BENCH_SERVER_WORKERS", 2))
SERVER_THREADS = int(os.environ.get("BENCH_SERVER_THREADS", 8))
TTL = 43200
TARGET = 0.7

# Mirrors credentials.broker.sts_client(): same timeouts and retry policy.
STS_CONFIG = Config(connect_timeout=5.0, read_timeout=5.0, retries={"mode": "standard", "max_attempts": 2})


# --- environment ----------------------------------------------------------------------------------------

# --- CPU accounting (Linux /proc; empty elsewhere) -----------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (the server's workers, weed's children)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes (those that exited meanwhile count as zero)."""
    ticks = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLOCK_TICKS


class CpuMeter:
    """CPU used by this bench process, the private API's server and SeaweedFS over one measurement."""

    def __init__(self, api_pid: int, weed_pid: int):
        try:
            self.groups = {"api": process_tree(api_pid), "weed": process_tree(weed_pid)}
        except OSError:
            self.groups = {}

    def snapshot(self) -> dict[str, float]:
        snapshot = {"bench": time.process_time(), "wall": time.monotonic()}
        if self.groups:
            snapshot.update({name: cpu_seconds(pids) for name, pids in self.groups.items()})
            try:
                with open("/proc/stat") as stat:
                    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
                    jiffies = [int(value) for value in stat.readline().split()[1:9]]
                snapshot["machine"] = (sum(jiffies) - jiffies[3] - jiffies[4]) / CLOCK_TICKS
            except (OSError, ValueError):
                pass
        return snapshot

    @staticmethod
    def others_share(cpu: Counter) -> float | None:
        """The share of the machine's CPUs used by processes other than this bench's own."""
        if "machine" not in cpu or not cpu["wall"]:
            return None
        ours = cpu["bench"] + cpu["api"] + cpu["weed"]
        return max(0.0, cpu["machine"] - ours) / (cpu["wall"] * (os.cpu_count() or 1))


# --- measurement -------------------------------------------------------------------------------------

@dataclass
class Sample:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    cpu: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def merge(self, other: "Sample") -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors.update(other.errors)
        self.cpu.update(other.cpu)

    def cpu_per_request_ms(self, name: str) -> float:
        return 1000 * self.cpu[name] / self.count if self.count else float("nan")


class TeamCycle:
    """Hands out the pool's teams round-robin across all threads."""

    def __init__(self, teams: list[tuple[int, str]]):
        self.teams = teams
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> tuple[int, str]:
        with self.lock:
            team = self.teams[self.next % len(self.teams)]
            self.next += 1
            return team


def closed_loop(concurrency: int, seconds: float, make_call, meter: CpuMeter | None = None) -> Sample:
    """`concurrency` threads each calling back to back for `seconds`; the latency of every success is kept."""
    barrier = threading.Barrier(concurrency + 1)
    results = [Sample() for _ in range(concurrency)]
    window: dict[str, float] = {}

    def worker(index: int) -> None:
        call, close = make_call()
        sample = results[index]
        try:
            barrier.wait()
            deadline = window["end"]
            while True:
                started = time.perf_counter()
                if started >= deadline:
                    break
                try:
                    error = call()
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the bench
                    error = type(exc).__name__
                if error:
                    sample.errors[error] += 1
                else:
                    sample.latencies.append(time.perf_counter() - started)
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    before = meter.snapshot() if meter else {}
    start = time.perf_counter()
    window["end"] = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    # Calls in flight at the deadline end after it: divide by the real elapsed time.
    total = Sample(seconds=time.perf_counter() - start)
    if meter:
        after = meter.snapshot()
        total.cpu.update({name: after[name] - before[name] for name in before})
    for sample in results:
        total.latencies += sample.latencies
        total.errors.update(sample.errors)
    return total


def raw_caller(sts, teams: TeamCycle, bucket: str):
    """Threads share one boto3 client, as the control plane's threads do (credentials.broker.sts_client)."""
    def make():
        def call():
            team_id, _ = teams.take()
            # The broker's request field for field (credentials.broker.assume_team_role with STS_TRACE on).
            response = sts.assume_role(
                RoleArn=ROLE_ARN,
                RoleSessionName=f"cloudctl-team-{team_id}-{secrets.token_hex(4)}",
                DurationSeconds=TTL,
                Policy=policy_document(team_session_policy(bucket, team_id)),
                SourceIdentity=f"cloudctl-team-{team_id}",
                Tags=[{"Key": "cloudctl-team", "Value": str(team_id)}],
            )
            return None if response["Credentials"]["SessionToken"] else "empty credentials"
        return call, lambda: None
    return make


def endpoint_caller(port: int, teams: TeamCycle):
    """One keep-alive connection per thread, like an instance's credential helper; the stdlib client is
    used because this machine's two cores are shared with the server (httpx costs ~4x the client CPU)."""
    def make():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def call():
            team_id, token = teams.take()
            connection.request("POST", PATH, headers={"Authorization": f"Bearer {token}", "Content-Length": "0",
                                                      "X-Cloudctl-Boot": f"bench-boot-{team_id:08d}"})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                return f"HTTP {response.status} {body[:120].decode(errors='replace')}"
            return None if json.loads(body).get("SessionToken") else "empty credentials"
        return call, connection.close
    return make


async def burst(port: int, fleet: list[tuple[int, str]], timeout: float = 120.0
                ) -> tuple[float, list[float], Counter]:
    """Every exchange released at once, each on a new connection of its own from an address of its own (an
    instance booting)."""
    errors: Counter = Counter()
    latencies: list[float] = []
    go = asyncio.Event()

    async def exchange(number: int, team_id: int, token: str) -> None:
        request = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                   f"X-Cloudctl-Boot: bench-burst-{team_id:08d}\r\n"
                   "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
        source = f"127.1.{number // 250}.{number % 250 + 1}"  # every team machine has an address of its own
        await go.wait()
        started = time.perf_counter()
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                writer.write(request)
                await writer.drain()
                answer = await reader.read()  # the server closes after the response
            head, _, body = answer.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
            if status != 200:
                errors[f"HTTP {status} {body[:120].decode(errors='replace')}" if status else "no response"] += 1
            elif not json.loads(body).get("SessionToken"):
                errors["empty credentials"] += 1
            else:
                latencies.append(time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001
            errors[type(exc).__name__] += 1
        finally:
            if writer is not None:
                writer.close()

    tasks = [asyncio.create_task(exchange(number, team_id, token))
             for number, (team_id, token) in enumerate(fleet)]
    await asyncio.sleep(0)  # every task is now parked on the event
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - start, latencies, errors


def row(name: str, sample: Sample) -> str:
    latencies = sample.latencies or [float("nan")]
    return (f"{name:<40}{sample.count:>7}{sample.rate:>9.1f}{1000 * statistics.median(latencies):>9.1f}"
            f"{1000 * percentile(latencies, 99):>9.1f}{sum(sample.errors.values()):>7}")


# --- main ----------------------------------------------------------------------------------------------

def main() -> int:
    raise_open_files_limit()
    work = Path(tempfile.mkdtemp(prefix="cloudctl-bench-"))
    server: LocalS3Server | None = None
    api: PrivateServer | None = None
    try:
        began = time.monotonic()
        log(f"cpus: {os.cpu_count()}  concurrency: {CONCURRENCY}  rounds: {ROUNDS} x {ROUND_SECONDS:g}s per side  "
            f"burst: {BURST}  server: cloudctl.server {SERVER_WORKERS} workers x {SERVER_THREADS} threads")
        server = LocalS3Server(work / "seaweedfs", ports=free_port_set())
        config = server.start()
        log(f"local STS (SeaweedFS) ready at {config.endpoint_url}")

        env = private_api_environ(config, work)
        # The raw side reads the same AWS_* configuration as the control plane.
        os.environ.clear()
        os.environ.update(env)

        teams = create_teams(POOL + BURST, env, work)
        pool, fleet = TeamCycle(teams[:POOL]), teams[POOL:]
        log(f"{len(teams)} teams created ({POOL} cycled through in phase 1, {BURST} for the burst)")

        api = PrivateServer(env, work, workers=SERVER_WORKERS, threads=SERVER_THREADS)
        api.wait_ready()
        log(f"private API ready at {api.url}  (setup {time.monotonic() - began:.1f}s)")

        meter = CpuMeter(api.process.pid, server.process.pid)
        sts = boto3.session.Session().client("sts", config=STS_CONFIG)
        sides = {"raw": raw_caller(sts, pool, config.bucket), "endpoint": endpoint_caller(api.port, pool)}
        # Warm up both: clients and pools, every server thread's first request (DB, STS client).
        closed_loop(CONCURRENCY, 1.0, sides["raw"])
        closed_loop(SERVER_WORKERS * SERVER_THREADS, 1.5, sides["endpoint"])

        log("")
        log(f"phase 1: {CONCURRENCY} concurrent callers per side, {ROUNDS} alternating rounds of {ROUND_SECONDS:g}s")
        totals = {"raw": Sample(), "endpoint": Sample()}
        round_ratios: list[float] = []
        for number in range(ROUNDS):
            rates = {}
            for side in ("raw", "endpoint") if number % 2 == 0 else ("endpoint", "raw"):
                sample = closed_loop(CONCURRENCY, ROUND_SECONDS, sides[side], meter)
                totals[side].merge(sample)
                rates[side] = sample.rate
            round_ratios.append(rates["endpoint"] / rates["raw"])
            log(f"  round {number + 1}: raw {rates['raw']:6.1f}/s   endpoint {rates['endpoint']:6.1f}/s   "
                f"ratio {round_ratios[-1]:.3f}")

        log("")
        log(f"phase 2: {BURST} exchanges for {BURST} distinct teams fired at once, each on a new connection")
        wall, burst_latencies, burst_errors = asyncio.run(burst(api.port, fleet))
        burst_sample = Sample(seconds=wall, latencies=burst_latencies, errors=burst_errors)

        log("")
        header = f"{'':<40}{'count':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
        log(header)
        log("-" * len(header))
        log(row(f"raw AssumeRole (c={CONCURRENCY})", totals["raw"]))
        log(row(f"POST {PATH} (c={CONCURRENCY})", totals["endpoint"]))
        log(row(f"burst ({BURST} teams at once)", burst_sample))
        log("-" * len(header))
        if meter.groups:
            log("CPU ms per request (phase 1):  " + "   ".join(
                f"{side}: " + ", ".join(f"{name} {totals[side].cpu_per_request_ms(name):.2f}"
                                        for name in ("bench", "api", "weed"))
                for side in ("raw", "endpoint")))
            phase_cpu = totals["raw"].cpu + totals["endpoint"].cpu
            others = CpuMeter.others_share(phase_cpu)
            if others is not None:
                log(f"other processes on this machine used {others:.0%} of its {os.cpu_count()} CPUs during phase 1"
                    + (" (noisy: rerun on a quiet machine for a stable ratio)" if others > 0.1 else ""))
        log(f"burst: {burst_sample.count}/{BURST} ok in {wall:.2f}s wall"
            + (f"; errors: {dict(burst_errors)}" if burst_errors else ", zero errors"))
        failures = {side: dict(totals[side].errors) for side in totals if totals[side].errors}
        if failures:
            log(f"phase 1 errors: {failures}")
        ratio = totals["endpoint"].rate / totals["raw"].rate
        burst_clean = burst_sample.count == BURST and not burst_errors
        if failures or not burst_clean:
            log(f"--- server log (tail, issuance lines left out) ---\n{api.tail()}\n---")
        log(f"ratio of the totals {ratio:.3f} (median of the rounds' ratios {statistics.median(round_ratios):.3f})")
        log(f"target ratio >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'};  "
            f"burst with zero errors: {'met' if burst_clean else 'NOT met'};  total {time.monotonic() - began:.0f}s")
        log(f"ratio: {ratio:.3f}")
        return 0 if burst_clean and not failures else 1
    except BaseException:
        if api is not None:
            print(f"--- server log (tail) ---\n{api.tail()}", file=sys.stderr)
        raise
    finally:
        if api is not None:
            api.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())
