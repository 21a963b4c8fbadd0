"""What tests need to reach a team's instance as its router does, and to run the embedded router."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from teams.routing import routing_secret, team_hostname

REPO = Path(__file__).resolve().parent.parent


def as_router(team) -> dict[str, str]:
    """The headers the team's router sends: its own name and its routing secret (what Fly's proxy puts in
    `fly-replay-src` from the replay's `state`)."""
    return {"Host": team_hostname(team.slug),
            "fly-replay-src": f"instance=test;state={routing_secret(team.pk, team.token_generation)}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_router(env: dict[str, str], port: int, *, mode: str = "embedded", timeout: float = 60) -> subprocess.Popen:
    """`python -m router.server` as its own process (its own process group), once it accepts connections."""
    process = subprocess.Popen([sys.executable, "-m", "router.server", "--bind", f"127.0.0.1:{port}", "--mode", mode],
                               cwd=REPO, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the router exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the router did not listen in time")
