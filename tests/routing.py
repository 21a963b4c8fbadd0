"""What tests need to reach a team's instance as its router does, and to run the embedded router."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from teams.routing import routing_secret, team_hostname

from .ports import free_port  # noqa: F401 (the router tests' port, here with the rest they need)

REPO = Path(__file__).resolve().parent.parent


def as_router(team) -> dict[str, str]:
    """The headers the team's router sends: its own name and its routing secret (what Fly's proxy puts in
    `fly-replay-src` from the replay's `state`)."""
    state = routing_secret(team.pk)
    return {"Host": team_hostname(team.slug), "fly-replay-src": f"instance=test;state={state}"}


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


class Upstream:
    """A stand-in for a team's instance on 127.0.0.1: records what reached it and answers how many bytes it read;
    `GET /big/<n>` streams n bytes."""

    def __init__(self):
        self.requests = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                if self.path.startswith("/big/"):
                    return self._stream(int(self.path.rsplit("/", 1)[1]))
                received = 0  # counted, not kept: uploads may be hundreds of MB
                length = int(self.headers.get("Content-Length") or 0)
                chunked = self.headers.get("Transfer-Encoding") == "chunked"
                while chunked and (size := int(self.rfile.readline(), 16)):
                    received += self._discard(size)
                    self.rfile.readline()
                if chunked:
                    self.rfile.readline()
                received += self._discard(length)
                upstream.requests.append({"method": self.command, "path": self.path,
                                          "headers": self.headers.items(), "length": received})
                answer = json.dumps({"length": received}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _discard(self, size: int) -> int:
                read = 0
                while read < size and (block := self.rfile.read(min(65536, size - read))):
                    read += len(block)
                return read

            def _stream(self, size: int):
                """`size` bytes, made as they are sent."""
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                block = b"z" * 65536
                while size > 0:
                    self.wfile.write(block[:size])
                    size -= len(block)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
