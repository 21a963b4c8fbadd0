"""`python -m cloudctl.server`: slow or greedy clients cost no worker thread (issue: a few trickling bodies
stalled the private API for the whole fleet under gunicorn's threads).

The buffering front is tested in-process; the real server is started as fly.toml runs the private process,
with ONE Django thread, so that any connection holding that thread would block the exchange these tests make.
Nothing here measures time: the deadlines are only waited for (bench/slow_clients.py measures).
"""

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudctl.asgi import BufferedRequests, ThreadedWSGI, wsgi_environ
from cloudctl.local_s3 import port_is_free
from cloudctl.processes import stop_process_group
from teams.tokens import team_token

from .database import database_url

REPO = Path(__file__).resolve().parent.parent
PATH = "/private/v1/credentials"
TRICKLER = "127.0.0.2"  # one hostile source; the well-behaved client connects from 127.0.0.1


# --- the buffering front, in-process -------------------------------------------------------------------------

def scope(headers=()):
    return {"type": "http", "method": "POST", "path": PATH, "headers": list(headers)}


class Inner:
    """The wrapped application: records what it was given."""

    def __init__(self):
        self.calls = []

    async def __call__(self, scope, receive, send):
        self.calls.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def run(front, scope, messages):
    """Runs `front` with `messages` as what the client sends (then nothing more, ever); returns what it sent."""
    sent = []

    async def go():
        pending = list(messages)

        async def receive():
            if pending:
                return pending.pop(0)
            await asyncio.Event().wait()  # a client that sends nothing more

        async def send(message):
            sent.append(message)

        await front(scope, receive, send)

    asyncio.run(go())
    return sent


def answer(sent):
    start = sent[0]
    return start["status"], dict(start["headers"]), json.loads(sent[1]["body"]) if start["status"] != 200 else None


def test_the_application_gets_the_whole_body_at_once_and_only_when_complete():
    inner = Inner()
    front = BufferedRequests(inner, body_timeout=30, max_body=100)
    chunks = [{"type": "http.request", "body": b"secret=", "more_body": True},
              {"type": "http.request", "body": b"abc", "more_body": True},
              {"type": "http.request", "body": b"", "more_body": False}]
    sent = run(front, scope([(b"content-length", b"10")]), chunks)
    assert inner.calls == [{"type": "http.request", "body": b"secret=abc", "more_body": False}]
    assert sent[0]["status"] == 200


def test_a_body_that_does_not_arrive_in_time_is_a_408_that_closes_and_never_reaches_the_application():
    inner = Inner()
    front = BufferedRequests(inner, body_timeout=0.05, max_body=100)
    sent = run(front, scope([(b"content-length", b"10")]), [{"type": "http.request", "body": b"a", "more_body": True}])
    status, headers, body = answer(sent)
    assert (status, headers[b"connection"], body) == (408, b"close", {"error": "request body not received within 0.05s"})
    assert inner.calls == []


def test_a_body_over_the_limit_is_a_413_declared_or_sent():
    inner = Inner()
    front = BufferedRequests(inner, body_timeout=30, max_body=10)
    declared = run(front, scope([(b"content-length", b"11")]), [])  # refused before reading anything
    chunked = run(front, scope(), [{"type": "http.request", "body": b"x" * 6, "more_body": True},
                                   {"type": "http.request", "body": b"x" * 6, "more_body": True}])
    for sent in (declared, chunked):
        status, headers, body = answer(sent)
        assert (status, headers[b"connection"], body) == (413, b"close", {"error": "body over 10 bytes"})
    assert inner.calls == []


def test_a_client_gone_before_its_body_ends_never_reaches_the_application():
    inner = Inner()
    front = BufferedRequests(inner, body_timeout=30, max_body=100)
    sent = run(front, scope([(b"content-length", b"10")]), [{"type": "http.request", "body": b"a", "more_body": True},
                                                             {"type": "http.disconnect"}])
    assert sent == [] and inner.calls == []


def test_the_wsgi_environ_is_gunicorns_raw_path_and_no_header_with_an_underscore():
    environ = wsgi_environ({"method": "POST", "path": "/private/\ufffd", "raw_path": b"/private/%ff%2F",
                            "query_string": b"format=x", "http_version": "1.1", "scheme": "http",
                            "server": ("127.0.0.1", 8001), "client": ("10.0.0.7", 4321),
                            "headers": [(b"fly-client-ip", b"10.0.0.7"), (b"fly_client_ip", b"1.2.3.4"),
                                        (b"content-length", b"3"), (b"accept", b"a"), (b"accept", b"b")]}, b"abc")
    assert environ["PATH_INFO"] == "/private/\xff/"  # the bytes, as latin-1 (PEP 3333): Django decodes them
    assert environ["HTTP_FLY_CLIENT_IP"] == "10.0.0.7"
    assert (environ["CONTENT_LENGTH"], environ["HTTP_ACCEPT"], environ["REMOTE_ADDR"]) == ("3", "a,b", "10.0.0.7")
    assert environ["wsgi.input"].read() == b"abc"


def test_the_wsgi_application_runs_on_the_pool_and_its_answer_is_closed():
    import threading

    seen = {}

    class Answer(list):
        def close(self):
            seen["closed on"] = threading.current_thread().name

    def app(environ, start_response):
        seen["ran on"] = threading.current_thread().name
        start_response("418 I'm a teapot", [("Content-Type", "text/plain")])
        return Answer([b"short ", b"and stout"])

    sent = run(ThreadedWSGI(app, threads=1), {**scope(), "query_string": b"", "http_version": "1.1"},
               [{"type": "http.request", "body": b"", "more_body": False}])
    assert sent == [{"type": "http.response.start", "status": 418, "headers": [(b"content-type", b"text/plain")]},
                    {"type": "http.response.body", "body": b"short and stout"}]
    assert seen["ran on"].startswith("django") and seen["closed on"] == seen["ran on"]


# --- the real server ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_is_free(port)
    return port


def start_server(tmp_path, settings, **limits) -> tuple[subprocess.Popen, int]:
    """The private process as fly.toml runs it (one worker here), sharing this test's database and STS."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CLOUDCTL_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "cloudctl.settings",
        "CLOUDCTL_URLCONF": "cloudctl.urls_private",
        "DATABASE_URL": database_url(),
        "CLOUDCTL_STATE_DIR": str(tmp_path / "state"),
        "CLOUDCTL_TOKEN_KEYS": ",".join(settings.TOKEN_KEYS),
        "CLOUDCTL_BACKUP_BUCKET": settings.BACKUP_BUCKET,
        "CLOUDCTL_BACKUP_ROLE_ARN": settings.BACKUP_ROLE_ARN,
        "CLOUDCTL_SERVER_THREADS": "1",
        **{f"CLOUDCTL_SERVER_{name.upper()}": str(value) for name, value in limits.items()},
    })
    log = open(tmp_path / f"server-{port}.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "cloudctl.server", "--bind", f"127.0.0.1:{port}",
                                "--workers", "1"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / f"server-{port}.log").read_text()
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            probe.request("GET", PATH)
            if probe.getresponse().status == 405:
                return process, port
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not start")


@pytest.fixture
def serve(tmp_path, settings):
    processes = []

    def start(**limits) -> int:
        process, port = start_server(tmp_path, settings, **limits)
        processes.append(process)
        return port

    yield start
    for process in processes:
        stop_process_group(process)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.settimeout(60)  # only so that a broken server cannot hang the suite
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def start_trickling(port: int, source: str = TRICKLER) -> socket.socket:
    """A request that declares a body and sends one byte of it."""
    sock = connect(port, source)
    sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 "Content-Length: 4000\r\n\r\ns".encode())
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def exchange(port: int, token: str) -> http.client.HTTPResponse:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    client.request("POST", PATH, headers={"Authorization": f"Bearer {token}", "Content-Length": "0"})
    return client.getresponse()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_trickling_connections_are_capped_per_source_and_block_no_other_client(serve, s3_env, make_team):
    port = serve(connections_per_source=4, header_timeout=120, body_timeout=120)
    team = make_team()
    # One Django thread and four connections trickling their bodies: under a thread-per-connection server, the
    # first of them would hold that thread.
    tricklers = [start_trickling(port) for _ in range(4)]
    time.sleep(0.5)  # let the server accept them all (nothing depends on how long this takes)

    refused = connect(port, TRICKLER)
    answer = read_until_closed(refused)
    assert status_of(answer) == 429 and b"too many connections from this address" in answer

    response = exchange(port, team_token(team))
    assert response.status == 200
    assert json.loads(response.read())["SessionToken"]

    for sock in tricklers:  # still waiting for their bodies: nothing closed them
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)
        sock.close()
    # Their places are given back: the same source is served again.
    deadline = time.monotonic() + 30
    while True:
        again = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(TRICKLER, 0))
        again.request("GET", PATH)
        status = again.getresponse().status
        if status == 405 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 405


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_silent_and_trickling_clients_are_answered_408_and_closed(serve):
    port = serve(header_timeout=1, body_timeout=1)
    silent = connect(port)
    half_head = connect(port)
    half_head.sendall(b"POST /private/v1/credentials HTTP/1.1\r\nHost: 12")
    trickler = start_trickling(port)

    for sock, waiting_for in [(silent, "headers"), (half_head, "headers"), (trickler, "body")]:
        answer = read_until_closed(sock)
        assert status_of(answer) == 408, answer
        assert f"request {waiting_for} not received within 1s".encode() in answer


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_embedded_stack_asks_for_every_page_and_the_private_api(monkeypatch):
    """`manage.py dev` serves the combined URL conf because it asks for it: the default serves only the
    operator pages."""
    from cloudctl.management.commands.dev import Command

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "cloudctl.settings")
    monkeypatch.setenv("DATABASE_URL", database_url())
    monkeypatch.delenv("CLOUDCTL_URLCONF", raising=False)
    port = free_port()
    process = Command()._serve(port)
    try:
        statuses = {}
        deadline = time.monotonic() + 60
        while len(statuses) < 3 and time.monotonic() < deadline:
            try:
                for path in ("/admin/login/", PATH, "/private/metrics"):
                    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    client.request("GET", path)
                    statuses[path] = client.getresponse().status
            except OSError:
                assert process.poll() is None
                time.sleep(0.2)
        assert statuses == {"/admin/login/": 200, PATH: 405, "/private/metrics": 401}
    finally:
        process.terminate()  # uvicorn's supervisor stops its workers
        process.wait(timeout=30)
