"""The embedded router as `manage.py dev` runs it: its own process (`python -m router.server`), a real `db_worker`,
the local backend's real instances (Datasette + Litestream) and the live server's private API.

Isolation over a corpus of Host tricks, the instance refusing what its router did not send, wake from zero,
zero failed requests through a deploy that restarts the team, and 200 MB each way with the router's memory flat.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cloudctl.processes import stop_process_group
from instances.backends import ObservedState
from instances.models import Instance, TeamAction
from teams.models import Team
from instances.provisioning import instance_for
from teams.routing import routing_secret
from instances.lifecycle import stop_instance
from instances.services import request_provisioning

from .instance_sso import as_tester
from .routing import REPO, Upstream, as_router, free_port, start_router
from .test_instance import needs_instance_venv, wait_for
from .test_local_backend import control_plane_env, local  # noqa: F401 (the fixture)

pytestmark = [needs_instance_venv, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

START_TIMEOUT = 120


@dataclass
class Stack:
    port: int
    router: subprocess.Popen
    env: dict

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def host(self, slug: str) -> str:
        return f"{slug}.localhost:{self.port}"

    def get(self, slug: str, path: str = "/", **kwargs) -> httpx.Response:
        """As a browser at http://<slug>.localhost:<port>/ asks (curl and browsers resolve *.localhost to
        loopback; this connects to it directly)."""
        return httpx.get(self.url(path), headers={"Host": self.host(slug), **kwargs.pop("headers", {})},
                         timeout=kwargs.pop("timeout", 120), **kwargs)


def stack_env(settings, tmp_path, **overrides) -> dict:
    return {**control_plane_env(settings, tmp_path), "CLOUDCTL_ROUTER_WAKE_TIMEOUT": str(START_TIMEOUT), **overrides}


@contextmanager
def router_stack(settings, tmp_path, *, port: int) -> Iterator[Stack]:
    """The router process on `port` and a worker process on this test's database, both started with the teams'
    domain and URL as `settings` has them."""
    env = stack_env(settings, tmp_path)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-reload", "--no-startup-delay"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        router = start_router(env, port)
    except BaseException:
        stop_process_group(worker)
        raise
    try:
        yield Stack(port=port, router=router, env=env)
    finally:
        stop_process_group(router)
        stop_process_group(worker)


@pytest.fixture
def routed(local, settings, tmp_path):  # noqa: F811
    """Teams at http://<slug>.localhost:<port>/: the router process and a worker process on this test's database."""
    port = free_port()
    settings.TEAMS_DOMAIN, settings.TEAMS_URL_SCHEME, settings.TEAMS_URL_PORT = "localhost", "http", port
    with router_stack(settings, tmp_path, port=port) as stack:
        yield stack


def volume_data(team: Team, settings) -> Path:
    """The local backend's DATA_DIR of the team's instance."""
    return Path(settings.LOCAL_INSTANCES_DIR) / f"team-{team.pk}" / "data"


def queue_team(slug: str, settings, *, marker: bool = False, plugins: dict[str, str] | None = None,
               datasette_secret: str | None = None) -> Team:
    """A team whose provisioning is queued for the worker. With `marker`, its volume holds `<slug>_marker.db`, so an
    answer shows which team's Datasette gave it; `plugins` (file name -> source) are on its volume's `plugins/`
    before it starts, as a customer leaves them; with `datasette_secret`, its instance signs cookies with it (so
    that one sign-in of the tester works for several teams: a test about routing, not about signing in)."""
    team = Team.objects.create(slug=slug, name=slug, region=settings.REGIONS[0])
    data = volume_data(team, settings)
    if marker:
        data.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(data / f"{slug}_marker.db") as marker_db:
            marker_db.execute("create table marker (id)")
    for name, source in (plugins or {}).items():
        (data / "plugins").mkdir(parents=True, exist_ok=True)
        (data / "plugins" / name).write_text(source)
    if datasette_secret:
        runtime = data / ".cloudctl"
        runtime.mkdir(mode=0o700, parents=True)
        (runtime / "datasette-secret").write_text(datasette_secret)
    request_provisioning(team, actor="test")
    return team


def wait_until_running(team: Team) -> Team:
    wait_for(lambda: Instance.objects.filter(team=team, state=Instance.State.RUNNING).exists(), timeout=START_TIMEOUT,
             interval=0.5, message=f"team {team.slug} running")
    return team


def running_team(slug: str, settings, *, marker: bool = False, datasette_secret: str | None = None) -> Team:
    """A team provisioned by the worker (see `queue_team`)."""
    return wait_until_running(queue_team(slug, settings, marker=marker, datasette_secret=datasette_secret))


def signed_in_tester(team) -> dict[str, str]:
    """The Cookie header of the tester signed in to the team's instance (the `local` fixture's fake confirms it)."""
    return as_tester(instance_for(team).resources["volume"])


def test_a_team_is_served_at_its_name_and_its_instance_answers_only_its_router(routed, settings):
    team = running_team("alpha", settings)
    through_router = routed.get("alpha", "/-/databases.json", headers=signed_in_tester(team))
    assert through_router.status_code == 200
    assert [database["name"] for database in through_router.json()["databases"]] == ["data"]
    instance = instance_for(team)
    direct = httpx.get(instance.url, timeout=10)
    spoofed = httpx.get(instance.url, timeout=10, headers={"Host": "alpha.localhost", "fly-replay-src": "state=x"})
    health = httpx.get(instance.url + "-/versions.json", timeout=10)
    assert (direct.status_code, spoofed.status_code, health.status_code) == (403, 403, 200)
    assert "router" in direct.text and "data" not in direct.text
    assert httpx.get(instance.url, timeout=10, headers={**as_router(team), **signed_in_tester(team)}).status_code == 200
    assert routed.get("nobody").status_code == 404


def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Exactly these bytes (no client library normalises them); the status and everything after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(head)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    try:
        return int(answer.split(b" ", 2)[1]), answer
    except (IndexError, ValueError):
        return 0, answer  # closed without an answer


def test_host_tricks_never_reach_another_team(routed, settings):
    shared = "one-datasette-secret-for-both-teams"
    alpha = running_team("alpha", settings, marker=True, datasette_secret=shared)
    beta = running_team("beta", settings, marker=True, datasette_secret=shared)
    signed_in = "".join(f"{name}: {value}\r\n" for name, value in signed_in_tester(alpha).items()).encode()
    port = routed.port
    beta_state = f"state={routing_secret(beta.pk)}".encode()
    path = b"/-/databases.json"
    # (request head, the teams that may answer it: None is no team, a page of the router's or a refusal)
    corpus = [
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost:%d\r\n", {"alpha"}),
        (b"GET %s HTTP/1.1\r\nHost: BETA.LocalHost.:%d\r\n", {"beta"}),
        (b"GET %s HTTP/1.1\r\nHost: Alpha.localhost\r\n", {"alpha"}),
        (b"GET http://beta.localhost:%d%s HTTP/1.1\r\nHost: alpha.localhost\r\n", {"alpha", None}),
        (b"GET http://beta.localhost%s HTTP/1.1\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost\r\nX-Forwarded-Host: beta.localhost\r\n", {"alpha"}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost\r\nForwarded: host=beta.localhost\r\n", {"alpha"}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost\r\nX-Original-Host: beta.localhost\r\n", {"alpha"}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost\r\n:authority: beta.localhost\r\n", {"alpha", None}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost\r\nHost: beta.localhost\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost.beta.localhost\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: beta.localhost@alpha.localhost\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost@beta.localhost\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost:%d:80\r\n", {None}),
        ("GET %s HTTP/1.1\r\nHost: \u0430lpha.localhost\r\n".encode(), {None}),   # Cyrillic a
        (b"GET %s HTTP/1.1\r\nHost: xn--lpha-0sd.localhost\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: localhost:%d\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: beta\r\n", {None}),
        (b"GET %s HTTP/1.1\r\nHost: \r\n", {None}),
        (b"GET %s HTTP/1.0\r\n", {None}),
        (b"GET //beta.localhost%s HTTP/1.1\r\nHost: alpha.localhost\r\n", {"alpha", None}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost\r\nfly-replay-src: instance=x;" + beta_state + b"\r\n", {"alpha"}),
        (b"GET %s HTTP/1.1\r\nHost: alpha.localhost\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0",
         {"alpha", None}),
    ]
    served = {"alpha": 0, "beta": 0}
    wrong = []
    for template, allowed in corpus:
        head = fill(template, path, port) + signed_in + b"Connection: close\r\n\r\n"
        status, answer = raw_request(port, head)
        answered_by = {slug for slug in ("alpha", "beta") if f"{slug}_marker".encode() in answer}
        if status == 200 and len(answered_by) == 1:
            [team] = answered_by
            served[team] += 1
            if team not in allowed:
                wrong.append((head, team))
        elif status == 200 or answered_by:
            wrong.append((head, answered_by))
    assert wrong == []
    assert served["alpha"] >= 6 and served["beta"] >= 1  # the corpus reached the teams it should

    # A tenant replaying to another team, or a client going around the router: the instance refuses.
    alpha_state = f"state={routing_secret(alpha.pk)}"
    beta_url = instance_for(beta).url
    for headers in ({"Host": "beta.localhost", "fly-replay-src": alpha_state},
                    {"Host": "alpha.localhost", "fly-replay-src": beta_state.decode()},
                    {"Host": "beta.localhost", "fly-replay-src": beta_state.decode() + "x"},
                    {"Host": "beta.localhost"}):
        answer = httpx.get(beta_url + "-/databases.json", headers=headers, timeout=10)
        assert answer.status_code == 403 and b"beta_marker" not in answer.content, headers


def fill(template: bytes, path: bytes, port: int) -> bytes:
    """`%s` is the path, `%d` the router's port, in the order they appear."""
    out, rest = b"", template
    while (index := min((i for i in (rest.find(b"%s"), rest.find(b"%d")) if i >= 0), default=-1)) >= 0:
        out += rest[:index] + (path if rest[index + 1:index + 2] == b"s" else str(port).encode())
        rest = rest[index + 2:]
    return out + rest


def test_a_stopped_team_wakes_on_its_first_request(routed, settings, local):  # noqa: F811
    team = running_team("alpha", settings)
    stop_instance(team, actor="test")
    instance = instance_for(team)
    assert local.observe(instance) is ObservedState.STOPPED
    answer = routed.get("alpha", "/-/databases.json", headers=signed_in_tester(team))  # held while the worker starts it
    assert answer.status_code == 200 and [db["name"] for db in answer.json()["databases"]] == ["data"]
    start = TeamAction.objects.get(team=team, kind=TeamAction.Kind.START)
    assert start.requested_by == "router"  # queued for the worker, which started it
    wait_for(lambda: TeamAction.objects.get(pk=start.pk).status == TeamAction.Status.SUCCEEDED, timeout=60,
             message="the start to finish")
    assert instance_for(team).desired_state == Instance.State.RUNNING


def test_an_instance_that_scaled_to_zero_wakes_through_the_router(local, settings, tmp_path):  # noqa: F811
    port = free_port()
    settings.TEAMS_DOMAIN, settings.TEAMS_URL_PORT = "localhost", port
    env = stack_env(settings, tmp_path, CLOUDCTL_INSTANCE_IDLE_TIMEOUT="3s")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-reload", "--no-startup-delay"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    router = start_router(env, port)
    try:
        team = running_team("alpha", settings)
        instance = wait_for(lambda: Instance.objects.filter(team=team, scaled_to_zero_at__isnull=False,
                                                            backups_expected_since__isnull=True).first(),
                            timeout=60, message="the scale to zero")
        wait_for(lambda: local.observe(instance) is ObservedState.STOPPED, timeout=30, message="the instance to exit")
        answer = httpx.get(f"http://127.0.0.1:{port}/-/databases.json",
                           headers={"Host": f"alpha.localhost:{port}", **signed_in_tester(team)},
                           timeout=START_TIMEOUT)
        assert answer.status_code == 200
        assert TeamAction.objects.filter(team=team, kind=TeamAction.Kind.START, requested_by="router").exists()
    finally:
        stop_process_group(router)
        stop_process_group(worker)


def test_no_request_fails_while_a_deploy_restarts_the_team(routed, settings, local):  # noqa: F811
    """A client every 10 ms through the router, another straight at the instance, throughout a deploy that
    restarts the team: the router holds what the restart refuses; the direct client sees the gap."""
    from deploys.runner import run_deployment
    from deploys.services import start_deployment

    team = running_team("alpha", settings)
    direct_url, direct_headers = instance_for(team).url, {**as_router(team), **signed_in_tester(team)}
    outcomes = {"routed": [], "direct": []}
    done = threading.Event()

    def probe(name, url, headers):
        with httpx.Client(timeout=START_TIMEOUT) as client:
            while not done.is_set():
                try:
                    outcomes[name].append(client.get(url, headers=headers).status_code)
                except httpx.HTTPError as error:
                    outcomes[name].append(type(error).__name__)
                time.sleep(0.01)

    probes = [threading.Thread(target=probe, args=("routed", routed.url("/-/databases.json"),
                                                   {"Host": routed.host("alpha"), **signed_in_tester(team)})),
              threading.Thread(target=probe, args=("direct", direct_url + "-/databases.json", direct_headers))]
    for thread in probes:
        thread.start()
    try:
        wait_for(lambda: len(outcomes["routed"]) >= 10, timeout=30, message="the first answers")
        deployment = run_deployment(start_deployment("v2", canary=1, concurrency=1, actor="test"), actor="test")
        wait_for(lambda: outcomes["routed"][-5:] == [200] * 5, timeout=30, message="answers after the deploy")
    finally:
        done.set()
        for thread in probes:
            thread.join()
    assert deployment.state == deployment.State.SUCCEEDED, deployment.message
    assert local.running_image(instance_for(team)) == "v2"
    failed = [outcome for outcome in outcomes["routed"] if outcome != 200]
    direct_failed = [outcome for outcome in outcomes["direct"] if outcome != 200]
    print(f"\nthrough the router: {len(outcomes['routed'])} requests, {len(failed)} failed; "
          f"direct: {len(outcomes['direct'])} requests, {len(direct_failed)} failed")
    assert direct_failed, "the deploy restarted the instance: the direct client saw it down"
    assert failed == []


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_200_mb_each_way_streams_through_the_router(settings, tmp_path, make_team):
    """The router's memory stays flat: bodies stream both ways, never held whole. The team's instance is a plain
    HTTP server here (the router cares only that it answers at the instance's address)."""
    size = 200 * 1024 * 1024
    upstream = Upstream()
    port = free_port()
    settings.TEAMS_DOMAIN = "localhost"
    team = make_team("alpha")
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend", state=Instance.State.RUNNING,
                            url=upstream.url, resources={"port": upstream.port, "url": upstream.url})
    router = start_router(stack_env(settings, tmp_path), port)
    peak = {"kib": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak["kib"] = max(peak["kib"], rss_kib(router.pid))
            time.sleep(0.02)

    headers = {"Host": f"alpha.localhost:{port}"}
    try:
        httpx.get(f"http://127.0.0.1:{port}/warm-up", headers=headers, timeout=30).raise_for_status()
        before = rss_kib(router.pid)
        sampler = threading.Thread(target=sample)
        sampler.start()
        received = 0
        with httpx.stream("GET", f"http://127.0.0.1:{port}/big/{size}", headers=headers, timeout=120) as response:
            for chunk in response.iter_raw():
                received += len(chunk)

        def upload():
            block = b"u" * 65536
            for _ in range(size // len(block)):
                yield block

        uploaded = httpx.post(f"http://127.0.0.1:{port}/upload", headers=headers, content=upload(), timeout=120)
        done.set()
        sampler.join()
    finally:
        done.set()
        stop_process_group(router)
        upstream.close()
    assert received == size
    assert uploaded.json() == {"length": size}
    growth_mib = (peak["kib"] - before) / 1024
    print(f"\nrouter RSS before {before / 1024:.1f} MiB, peak {peak['kib'] / 1024:.1f} MiB (+{growth_mib:.1f} MiB)")
    assert growth_mib < 50
