"""What the instance benches share: a bare Datasette start, the yardstick a team's instance is measured against.
Not a bench: `make bench` runs the scripts directly in bench/."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTANCE_BIN = REPO / ".venv-instance" / "bin"
DEADLINE = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(condition, what: str):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def answers(url: str, headers: dict | None = None) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1, headers=headers).status_code == 200
    except httpx.HTTPError:
        return False


def bare_start(work: Path) -> float:
    """The same Datasette, no control plane, no Litestream: launch -> first HTTP 200."""
    port = free_port()
    database = work / f"bare-{port}.db"
    started = time.perf_counter()
    process = subprocess.Popen([str(INSTANCE_BIN / "datasette"), "serve", str(database), "--create",
                                "-h", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: answers(f"http://127.0.0.1:{port}/"), "the bare Datasette")
        return time.perf_counter() - started
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
