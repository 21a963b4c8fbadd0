"""A fake of the control plane's single sign-on API (docs/sso.md §2, §3) for instances under test, and the
credentials a test actor signs in with (minted with the instance's DATASETTE_SECRET, as Datasette signs them).

`FakeSSO` answers `POST /private/v1/sso/token` from `codes` and `POST /private/v1/sso/actor` from `sessions` /
`users` (each `(status, body)`), records every request, and can play an unreachable control plane. Any other
request is forwarded to `forward_to` (the real control plane: credentials, signals), for end-to-end tests whose
instances point their CLOUDCTL_URL here; there, `team_token=None` accepts every team's token.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from itsdangerous import URLSafeSerializer

TOKEN_PATH = "/private/v1/sso/token"
ACTOR_PATH = "/private/v1/sso/actor"


def member(user_id: str, role: str, email: str | None = None) -> tuple[int, dict]:
    """The control plane's 200 for a current member (§3)."""
    return 200, {"actor": {"id": user_id, "email": email or f"{user_id}@example.com", "role": role},
                 "revalidate_after": 60}


def refused(error: str = "not_a_member") -> tuple[int, dict]:
    return 403, {"error": error}


def actor_cookie(secret: str, *, user_id: str, grant: str, **extra) -> str:
    """Datasette's `ds_actor` value for a browser signed in through the handoff (what the callback sets)."""
    return URLSafeSerializer(secret, "actor").dumps({"a": {"id": user_id, "email": f"{user_id}@example.com",
                                                           "sso": grant, **extra}})


def api_token(secret: str, user_id: str) -> str:
    """A Datasette API token (`dstok_`) for the user, as `/-/create-token` makes it."""
    return "dstok_" + URLSafeSerializer(secret, "token").dumps({"a": user_id, "t": int(time.time())})


def volume_secret(data_dir) -> str:
    """The instance's DATASETTE_SECRET, which the entrypoint keeps on its volume."""
    return (Path(data_dir) / ".cloudctl" / "datasette-secret").read_text().strip()


def member_cookies(fake: "FakeSSO", data_dir, *, user_id: str = "tester", role: str = "owner") -> dict:
    """Cookies of a browser signed in to the instance serving `data_dir`, whose grant the fake confirms with
    `role`."""
    grant = f"grant-of-{user_id}"
    fake.sessions[grant] = member(user_id, role)
    return {"ds_actor": actor_cookie(volume_secret(data_dir), user_id=user_id, grant=grant)}


# Whom a FakeSSO(everyone=...) confirms: the fleet's end-to-end tests sign in as this owner of every team.
TESTER = "tester"


def as_tester(data_dir) -> dict[str, str]:
    """The Cookie header of the tester signed in to the instance serving `data_dir` (any grant: see `everyone`)."""
    return {"Cookie": f"ds_actor={actor_cookie(volume_secret(data_dir), user_id=TESTER, grant='grant-of-tester')}"}


class FakeSSO:
    def __init__(self, *, team_token: str | None, forward_to: str | None = None,
                 everyone: tuple[int, dict] | None = None):
        self.team_token = team_token
        self.forward_to = forward_to
        # The answer for every grant and user not set in `sessions` / `users` (default: refused).
        self.everyone = everyone
        self.codes: dict[str, tuple[int, dict]] = {}
        self.sessions: dict[str, tuple[int, dict]] = {}
        self.users: dict[str, tuple[int, dict]] = {}
        self.requests: list[dict] = []
        self.unreachable = False
        # Set by a test that holds revalidations open; they wait for it.
        self.release: threading.Event | None = None
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path not in (TOKEN_PATH, ACTOR_PATH) and fake.forward_to:
                    return self.forward("POST", body)
                fake.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                                      "body": json.loads(body or b"null")})
                if fake.unreachable:
                    self.close_connection = True
                    return  # no answer at all: the connection closes
                if fake.release is not None:
                    fake.release.wait(30)
                status, answer = fake.answer(self.path, self.headers.get("Authorization"), fake.requests[-1]["body"])
                self.reply(status, json.dumps(answer).encode(), {"Content-Type": "application/json"})

            def do_GET(self):
                self.forward("GET", None)

            def forward(self, method, body):
                request = urllib.request.Request(fake.forward_to.rstrip("/") + self.path, data=body, method=method,
                                                 headers={name: value for name, value in self.headers.items()
                                                          if name.lower() not in ("host", "content-length")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        self.reply(response.status, response.read(), dict(response.headers.items()))
                except urllib.error.HTTPError as error:
                    self.reply(error.code, error.read(), dict(error.headers.items()))

            def reply(self, status, payload, headers):
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, authorization: str | None, body) -> tuple[int, dict]:
        if not (authorization or "").startswith("Bearer ") or \
                self.team_token is not None and authorization != f"Bearer {self.team_token}":
            return 401, {"error": "invalid_token"}
        if path == TOKEN_PATH:
            # Single use, as the control plane burns a code at its first redemption.
            return self.codes.pop(body.get("code"), (400, {"error": "invalid_grant", "error_description": "unknown"}))
        if "user" in body and not str(body["user"]).isdigit():
            # As the control plane (docs/sso.md §3): a user id is a string of digits.
            return 400, {"error": "invalid_request", "error_description": "user: the actor's id, a string of digits"}
        if "session" in body:
            return self.sessions.get(body["session"], self.everyone or refused("session_ended"))
        return self.users.get(body.get("user"), self.everyone or refused())

    def revalidations(self, **body) -> int:
        return sum(1 for request in self.requests if request["path"] == ACTOR_PATH and request["body"] == body)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.release is not None:
            self.release.set()
        self.server.shutdown()
        self.server.server_close()
