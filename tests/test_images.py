"""Both images, run as Fly runs them: whatever they get wrong (paths, users, permissions, signals, missing files)
fails here, not on Fly.

The control-plane image (localhost/cloudctl) as `fly.toml` runs it: the release command, then each of its
[processes] in a container of its own, with fly.toml's exact command (read from the file, so that drift fails
here), its [env] and the fleet's secrets of its header, against a PostgreSQL of this module's own, the local
S3/STS and the fake Fly Machines API served from this test. A team is created with `manage.py create_team` in a
container; the worker container provisions it on the fake. Then the test plays Fly: it runs the instance image
(localhost/cloudctl-instance) as the Machine the fake holds says (its env, the app's secrets, a volume at its mount
path, its stop signal and timeout). The router app (fly.router.toml, the same image) runs beside them. Every
process container is stopped as Fly stops a Machine (fly.toml's kill_signal and kill_timeout, Fly's defaults).

What differs on this machine, and so is all that is overridden (README, "Building and running the images"):
- every container shares the host's network (`--network host`), so the ports fly.toml fixes become free ones: the
  `--bind` port of `web`, `private` and the router, the private API's in CLOUDCTL_PRIVATE_API_URL, the instance's
  PORT (bound to 127.0.0.1 with CLOUDCTL_BIND);
- Fly's names on its private network (6PN, IPv6) are `--add-host` entries for ::1: `fly-local-6pn` (what `private`
  binds) and the private API's host (what the instance calls);
- Fly's API is the fake (CLOUDCTL_FLY_API_URL), S3/STS the local SeaweedFS (AWS_ENDPOINT_URL, its bucket, role and
  keys), and the Machine's image, `registry.fly.io/...`, is the locally built instance image.

It starts a PostgreSQL of its own, so it runs once, in the suite's SQLite pass.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import tomllib
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from fakefly import FakeFly, serve

from .images import CONTROL_PLANE_IMAGE, INSTANCE_IMAGE, REPO, Containers, podman, require_image
from .ports import free_port
from .postgres import Cluster
from .settings import TEST_DATABASE
from .test_instance import admin_client, keys_under, wait_for, wipe_prefix

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TEST_DATABASE == "postgres",
                       reason="runs a PostgreSQL of its own for the control-plane containers: once, in the SQLite "
                              "pass"),
]

FLY = tomllib.loads((REPO / "fly.toml").read_text())
# The router app: the same image, its own fly.toml.
FLY_ROUTER = tomllib.loads((REPO / "fly.router.toml").read_text())
START_TIMEOUT = 120
# How Fly stops a Machine of an app that sets neither (fly.toml's kill_signal, kill_timeout): SIGINT, then SIGKILL
# after 5 s.
FLY_KILL_SIGNAL, FLY_KILL_TIMEOUT = "SIGINT", 5
# Where the containers reach the servers of this test (`--network host`).
LOOPBACK = "127.0.0.1"
# Fly's private network (6PN) is IPv6: its names (`fly-local-6pn`, `<process>.process.<app>.internal`) stand for the
# IPv6 loopback here.
PRIVATE_NETWORK = "::1"
TEAM_SLUG = "acme"
DATABASE = "data.db"


def fleet_secrets(database_url: str, s3_environ: dict) -> dict[str, str]:
    """The secrets fly.toml's header lists (`fly secrets set`), each made up for this run."""
    return {
        "DATABASE_URL": database_url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "CLOUDCTL_TOKEN_KEYS": secrets.token_urlsafe(32),
        "CLOUDCTL_ROUTER_KEY": secrets.token_urlsafe(32),
        "CLOUDCTL_METRICS_TOKEN": secrets.token_urlsafe(32),
        "AWS_ACCESS_KEY_ID": s3_environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3_environ["AWS_SECRET_ACCESS_KEY"],
        "CLOUDCTL_FLY_API_TOKEN": secrets.token_urlsafe(24),
    }


def on_port(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{parts.hostname}:{port}").geturl()


def bound_to_port(command: str, port: int) -> list[str]:
    """A fly.toml process command as Fly runs it (split like a shell, run without one), its `--bind HOST:PORT` on
    `port` instead: every container here shares the host's ports."""
    argv = shlex.split(command)
    at = argv.index("--bind") + 1
    host, _ = argv[at].rsplit(":", 1)
    return [*argv[:at], f"{host}:{port}", *argv[at + 1:]]


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    """`podman run --env-file`: secrets stay off command lines (as `fly secrets` keeps them out of fly.toml)."""
    assert all("\n" not in value for value in env.values())
    path.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    path.chmod(0o600)
    return path


def fly_stop(app: dict) -> tuple[str, ...]:
    """`podman run` options that make `podman stop` stop a Machine of `app` (a parsed fly.toml) as Fly does."""
    return ("--stop-signal", app.get("kill_signal", FLY_KILL_SIGNAL),
            "--stop-timeout", str(app.get("kill_timeout", FLY_KILL_TIMEOUT)))


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@dataclass
class ControlPlane:
    containers: Containers
    env: dict[str, str]
    env_file: Path
    database_url: str
    web_port: int
    private_api_url: str
    fake: FakeFly
    release_log: str

    def manage(self, role: str, *args: str) -> str:
        """A one-off `python manage.py ...` in the image (as `fly ssh console -C` would run it): its output."""
        result = self.containers.run(role, CONTROL_PLANE_IMAGE, "python", "manage.py", *args, detach=False,
                                     options=("--rm", "--network", "host", "--env-file", str(self.env_file)))
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.database_url) as connection:
            return connection.execute(sql, params).fetchall()

    def alive(self, role: str) -> None:
        status, code = self.containers.state(role)
        if status != "running":
            pytest.fail(f"the {role} container {status} with {code}:\n{self.containers.logs(role)[-4000:]}")


@pytest.fixture(scope="module")
def containers():
    require_image(CONTROL_PLANE_IMAGE)
    require_image(INSTANCE_IMAGE)
    made = Containers()
    yield made
    made.remove_all()


@pytest.fixture(scope="module")
def database_url():
    """A throwaway cluster (never pytest-django's test database) with the control plane's database, empty."""
    cluster = Cluster()
    url = cluster.start()
    try:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {url.rsplit('/', 1)[1]}")
        yield url
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def fake_fly():
    """Fly's Machines API, in fly.toml's org, its latencies a fifth of Fly's."""
    fake = FakeFly(orgs=(FLY["env"]["CLOUDCTL_FLY_ORG"],), time_scale=0.2)
    url, stop = serve(fake)
    yield fake, url
    stop()


@pytest.fixture(scope="module")
def control_plane(containers, database_url, fake_fly, local_s3, tmp_path_factory):
    """The release command, then web, private and worker, each in its own container, as fly.toml runs them."""
    fake, fake_url = fake_fly
    web_port, private_port = free_port(), free_port()
    private_api_url = on_port(FLY["env"]["CLOUDCTL_PRIVATE_API_URL"], private_port)
    s3_environ = local_s3.client_environ()
    env = {
        **FLY["env"],
        **fleet_secrets(database_url, s3_environ),
        "CLOUDCTL_PRIVATE_API_URL": private_api_url,
        "CLOUDCTL_FLY_API_URL": fake_url,
        "AWS_ENDPOINT_URL": s3_environ["AWS_ENDPOINT_URL"],
        "CLOUDCTL_BACKUP_BUCKET": s3_environ["CLOUDCTL_BACKUP_BUCKET"],
        "CLOUDCTL_BACKUP_ROLE_ARN": s3_environ["CLOUDCTL_BACKUP_ROLE_ARN"],
    }
    env_file = write_env_file(tmp_path_factory.mktemp("control-plane") / "control-plane.env", env)
    network = ("--network", "host", "--add-host", f"fly-local-6pn:{PRIVATE_NETWORK}", "--env-file", str(env_file))

    release = containers.run("release", CONTROL_PLANE_IMAGE, *shlex.split(FLY["deploy"]["release_command"]),
                             detach=False, timeout=300, options=("--rm", *network))
    assert release.returncode == 0, release.stdout + release.stderr
    processes = FLY["processes"]
    commands = {"web": bound_to_port(processes["web"], web_port),
                "private": bound_to_port(processes["private"], private_port),
                "worker": shlex.split(processes["worker"])}
    assert set(commands) == set(processes), "a process group of fly.toml that this test does not run"
    for role, command in commands.items():
        started = containers.run(role, CONTROL_PLANE_IMAGE, *command, options=(*network, *fly_stop(FLY)))
        assert started.returncode == 0, started.stderr
    plane = ControlPlane(containers, env, env_file, database_url, web_port, private_api_url, fake,
                         release.stdout + release.stderr)
    for role, address in (("web", (LOOPBACK, web_port)), ("private", (PRIVATE_NETWORK, private_port))):
        wait_for(lambda: plane.alive(role) or listening(*address), timeout=START_TIMEOUT,
                 message=f"{role} to listen on {address}")
    return plane


@dataclass
class ProvisionedTeam:
    id: int
    slug: str
    app: str
    machine_id: str
    machine: dict  # the Machine's config, as Fly would run it
    secrets: dict[str, str]  # the app's secrets, which Fly hands the Machine as environment variables


@pytest.fixture(scope="module")
def team(control_plane, local_s3):
    """A team created with `manage.py create_team` in a container, provisioned by the worker container on Fly."""
    output = control_plane.manage("create-team", "create_team", TEAM_SLUG, "--name", "Acme Newsroom")
    team_id = int(output.split("(id ")[1].split(",")[0])
    # Team ids start again in every test database: this prefix may hold another test's backups.
    wipe_prefix(admin_client(local_s3), local_s3.bucket, f"team-{team_id}/")

    def running():
        control_plane.alive("worker")
        [(state, resources)] = control_plane.query("SELECT state, resources FROM teams_instance WHERE team_id = %s",
                                                   team_id)
        if state == "failed":
            worker_log = control_plane.containers.logs("worker")[-4000:]
            pytest.fail(f"provisioning team {team_id} failed: {resources}\n{worker_log}")
        return resources if state == "running" else None

    resources = wait_for(running, timeout=START_TIMEOUT, message=f"team {team_id} to run on Fly (the fake)")
    fake = control_plane.fake
    machine = fake.machine(resources["machine"])
    app_secrets = {name: secret.value for name, secret in fake.apps[resources["app"]].secrets.items()}
    return ProvisionedTeam(team_id, TEAM_SLUG, resources["app"], machine.id, machine.config, app_secrets)


@dataclass
class Instance:
    role: str
    port: int
    containers: Containers

    def wait_healthy(self, path: str) -> None:
        def answers():
            status, code = self.containers.state(self.role)
            if status != "running":
                pytest.fail(f"the instance {status} with {code}:\n{self.log()[-4000:]}")
            return httpx.get(f"http://{LOOPBACK}:{self.port}{path}", timeout=2).status_code == 200

        wait_for(answers, timeout=START_TIMEOUT, message=f"the instance's health check {path}")

    def log(self) -> str:
        return self.containers.logs(self.role)

    def sql(self, data_dir: str, script: str) -> str:
        """Python's sqlite3 on the team's database, in the container (what a write through Datasette does)."""
        program = ("import sqlite3, sys\n"
                   f"db = sqlite3.connect({f'{data_dir}/{DATABASE}'!r}, timeout=30)\n"
                   f"{script}\n")
        return podman("exec", self.containers.name(self.role), "python", "-c", program).stdout


class FlyHost:
    """Plays Fly for the team's Machine: the instance image run as its config says, on a volume of its own."""

    def __init__(self, containers: Containers, team: ProvisionedTeam, tmp_path: Path):
        self.containers = containers
        self.team = team
        self.config = team.machine
        self.tmp_path = tmp_path

    @property
    def data_dir(self) -> str:
        [mount] = self.config["mounts"]
        return mount["path"]

    @property
    def health_check_path(self) -> str:
        [service] = self.config["services"]
        [check] = service["checks"]
        return check["path"]

    def run(self, role: str, volume: str, *, stop_signal: str | None = None) -> Instance:
        """As Fly starts the Machine: its env and the app's secrets, the volume at its mount path, its stop signal
        (unless the test gives another) and timeout. Its port is a free one, bound to 127.0.0.1."""
        port = free_port()
        env = {**self.config["env"], **self.team.secrets, "PORT": str(port), "CLOUDCTL_BIND": LOOPBACK}
        env_file = write_env_file(self.tmp_path / f"{role}.env", env)
        private_api = urllib.parse.urlsplit(self.config["env"]["CLOUDCTL_URL"]).hostname
        stop = self.config["stop_config"]
        started = self.containers.run(role, INSTANCE_IMAGE, options=(
            "--network", "host", "--add-host", f"{private_api}:{PRIVATE_NETWORK}", "--env-file", str(env_file),
            "--volume", f"{volume}:{self.data_dir}", "--stop-signal", stop_signal or stop["signal"],
            "--stop-timeout", str(int(stop["timeout"].removesuffix("s")))))
        assert started.returncode == 0, started.stderr
        instance = Instance(role, port, self.containers)
        instance.wait_healthy(self.health_check_path)
        return instance

    def stop(self, instance: Instance) -> int:
        """`podman stop` as Fly stops a Machine: its stop signal, SIGKILL after its timeout. The exit code."""
        podman("stop", self.containers.name(instance.role), timeout=90)
        status, code = self.containers.state(instance.role)
        assert status == "exited", status
        return code

    def count_restored(self, role: str, table: str) -> int:
        """The rows of `table` a new Machine on an empty volume restores from the team's backup."""
        volume = self.containers.volume(role)
        instance = self.run(role, volume)
        try:
            assert f"restoring {DATABASE}" in instance.log()
            return int(instance.sql(self.data_dir, f"print(db.execute('select count(*) from {table}').fetchone()[0])"))
        finally:
            self.containers.remove(role)
            self.containers.remove_volume(volume)


@pytest.fixture(scope="module")
def fly_host(containers, team, tmp_path_factory):
    return FlyHost(containers, team, tmp_path_factory.mktemp("fly-host"))


@pytest.fixture(scope="module")
def router_port(containers, control_plane, tmp_path_factory):
    """The router app as fly.router.toml runs it, with the two secrets its header names (the control plane's)."""
    port = free_port()
    env = {**FLY_ROUTER["env"], **{name: control_plane.env[name] for name in ("DATABASE_URL", "CLOUDCTL_ROUTER_KEY")}}
    env_file = write_env_file(tmp_path_factory.mktemp("router") / "router.env", env)
    [command] = FLY_ROUTER["processes"].values()
    started = containers.run("router", CONTROL_PLANE_IMAGE, *bound_to_port(command, port),
                             options=("--network", "host", "--env-file", str(env_file), *fly_stop(FLY_ROUTER)))
    assert started.returncode == 0, started.stderr
    wait_for(lambda: control_plane.alive("router") or listening(LOOPBACK, port), timeout=START_TIMEOUT,
             message="the router to listen")
    return port


def insert_rows(instance: Instance, data_dir: str, table: str, count: int) -> None:
    instance.sql(data_dir, f"with db:\n"
                           f"    db.execute('create table if not exists {table} (id integer primary key, value)')\n"
                           f"    db.executemany('insert into {table} (value) values (?)',"
                           f" [(f'row {{n}}',) for n in range({count})])")


def image_listing(image: str, directory: str) -> set[str]:
    """The names in `directory` of `image`, as its user sees them."""
    found = podman("run", "--rm", "--entrypoint", "find", image, directory, "-mindepth", "1", "-maxdepth", "1",
                   "-printf", "%f\\n")
    return set(found.stdout.split())


def test_the_images_hold_only_what_production_runs(containers):
    """No tests, fake Fly API, benchmarks or build tooling in the control plane's image, and nothing made while it
    was built (a database, a secret) in its state dir: that would ship, the same, to every machine."""
    app = image_listing(CONTROL_PLANE_IMAGE, "/app")
    assert {"manage.py", "cloudctl", "router", "flyapi"} <= app
    assert not app & {"tests", "fakefly", "bench", "docs", "podman", "instance", ".git", ".venv", ".venv-instance"}
    assert image_listing(CONTROL_PLANE_IMAGE, "/app/var") == {"static"}
    assert image_listing(INSTANCE_IMAGE, "/app") == {"requirements.txt", "entrypoint.py", "credential_helper.py",
                                                     "fingerprint.py", "plugins", "preview_plugins"}
    assert image_listing(INSTANCE_IMAGE, "/app/preview_plugins") == {"preview_guard.py"}


def test_the_control_plane_runs_as_fly_toml_says(control_plane):
    """The release ran the migrations and the schedule; web serves the operator pages (its health check) and not the
    private API, which `private` serves on the private address."""
    assert "Applying" in control_plane.release_log
    [check] = FLY["http_service"]["checks"]
    # Fly's TLS edge in front of web: its host and the scheme it received.
    edge = {"Host": FLY["env"]["DJANGO_ALLOWED_HOSTS"].split(",")[0], "X-Forwarded-Proto": "https"}
    web = f"http://{LOOPBACK}:{control_plane.web_port}"
    page = httpx.request(check["method"], web + check["path"], headers=edge, timeout=10)
    assert page.status_code == 200
    # collectstatic ran in the image and whitenoise serves what it collected.
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
    assert assets
    for asset in assets:
        assert httpx.get(web + asset, headers=edge, timeout=10).status_code == 200, asset
    private = urllib.parse.urlsplit(control_plane.private_api_url)
    private_host = {"Host": private.netloc}
    credentials = "/private/v1/credentials"
    refused = httpx.post(f"http://[{PRIVATE_NETWORK}]:{private.port}{credentials}", headers=private_host, timeout=10)
    assert refused.status_code == 401, refused.text
    assert httpx.post(web + credentials, headers=edge, timeout=10).status_code == 404
    for role in FLY["processes"]:
        control_plane.alive(role)
    # fly.toml's env and the secrets of its header are all a deployment needs: no error, on a machine of the image.
    control_plane.manage("check", "check", "--deploy")


def test_a_team_created_by_command_is_provisioned_on_fly(control_plane, team):
    assert team.machine["image"] == FLY["env"]["CLOUDCTL_INSTANCE_IMAGE"]
    assert team.machine["env"]["CLOUDCTL_URL"] == control_plane.private_api_url
    assert team.machine["env"]["CLOUDCTL_TEAM_ID"] == str(team.id)
    # The team's token reaches the Machine as an app secret, never in its config.
    assert "CLOUDCTL_TOKEN" in team.secrets
    assert team.secrets["CLOUDCTL_TOKEN"] not in repr(team.machine)
    status = control_plane.manage("status", "instance", team.slug, "status")
    assert "running" in status


def test_the_instance_backs_up_to_its_prefix_and_an_empty_volume_restores_it(control_plane, fly_host, team, local_s3,
                                                                              containers):
    volume = containers.volume("volume")
    instance = fly_host.run("instance", volume)
    log = instance.log()
    # Its credentials came from the private API container (over the 6PN name), for its own prefix.
    assert f"got backup credentials for s3://{local_s3.bucket}/team-{team.id}/" in log
    issued = control_plane.query("SELECT client_ip, user_agent FROM credentials_credentialevent"
                                 " WHERE team_id = %s AND kind = 'issued'", team.id)
    # The entrypoint's exchange, then Litestream's through the credential helper.
    assert {(str(ip), agent) for ip, agent in issued} == {(PRIVATE_NETWORK, "cloudctl-instance-entrypoint/1"),
                                                          (PRIVATE_NETWORK, "cloudctl-instance-credential-helper/1")}
    assert "first backup sync done" in log
    assert team.secrets["CLOUDCTL_TOKEN"] not in log
    s3 = admin_client(local_s3)
    assert any(key.startswith(f"team-{team.id}/{DATABASE}/") for key in keys_under(s3, local_s3.bucket,
                                                                                   f"team-{team.id}/"))
    # A request as Fly's proxy delivers it after the router's replay (its `state` in `fly-replay-src`) reaches
    # Datasette, which sends an anonymous browser to sign in; without the replay's state the instance refuses it.
    page = f"http://{LOOPBACK}:{instance.port}/"
    own_name = {"Host": team.machine["env"]["CLOUDCTL_HOSTNAME"], "Accept": "text/html"}
    replayed = f"instance=router;state={team.secrets['CLOUDCTL_ROUTING_SECRET']}"
    routed = httpx.get(page, headers={**own_name, "fly-replay-src": replayed})
    assert routed.status_code == 302
    assert routed.headers["location"].startswith(team.machine["env"]["CLOUDCTL_SSO_AUTHORIZE_URL"])
    assert httpx.get(page, headers=own_name).status_code == 403
    insert_rows(instance, fly_host.data_dir, "notes", 100)
    assert fly_host.stop(instance) == 0, instance.log()[-4000:]

    # A new Machine on a new, empty volume: the data comes back from the backup.
    containers.remove("instance")
    containers.remove_volume(volume)
    assert fly_host.count_restored("restored", "notes") == 100


def test_the_router_app_replays_a_team_to_its_machine(router_port, team):
    """The router app (fly.router.toml, the same image) reads the routing table the control plane wrote and sends a
    team's visitors to its Machine with the state the Machine's guard expects (both from CLOUDCTL_ROUTER_KEY)."""
    router = f"http://{LOOPBACK}:{router_port}"
    [service] = FLY_ROUTER["services"]
    [check] = service["http_checks"]
    # Fly's check reaches the Machine's own address: a name that is no team's.
    health = httpx.request(check["method"], router + check["path"], headers={"Host": f"{LOOPBACK}:{router_port}"})
    assert health.status_code == 200
    replay = httpx.get(router + "/", headers={"Host": team.machine["env"]["CLOUDCTL_HOSTNAME"]}, timeout=10)
    assert replay.headers["content-type"] == "application/vnd.fly.replay+json", replay.text
    assert (replay.json()["app"], replay.json()["instance"]) == (team.app, team.machine_id)
    assert replay.json()["state"] == team.secrets["CLOUDCTL_ROUTING_SECRET"]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_ends_with_litestream_last_sync(fly_host, containers, stop_signal):
    """SIGINT (Fly's default stop signal) as SIGTERM (the Machine's stop_config): the container exits 0, and every
    row committed right before the stop is in the backup."""
    name = stop_signal.name
    volume = containers.volume(f"volume-{name}")
    instance = fly_host.run(f"instance-{name}", volume, stop_signal=name)
    table = f"stopped_by_{name.lower()}"
    insert_rows(instance, fly_host.data_dir, table, 500)
    assert fly_host.stop(instance) == 0, instance.log()[-4000:]
    assert fly_host.count_restored(f"restored-{name}", table) == 500


def server_workers(container: str) -> list[int]:
    """The host's pids of the processes the container's first process started (gunicorn's workers, for web)."""
    leader = podman("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
    return [int(pid) for task in Path(f"/proc/{leader}/task").iterdir()
            for pid in (task / "children").read_text().split()]


def test_every_process_ends_on_flys_stop_signal_in_time(control_plane, router_port, containers):
    """Last (it stops them): web, private, worker and the router each end on Fly's stop signal with exit 0 within
    the kill timeout, rather than being killed (a worker mid-task, requests cut). One of web's server workers is
    frozen first, as a worker too busy to end in time is (a CI run under load saw web killed): web's server must
    give up on it before Fly's kill timeout."""
    roles = [*FLY["processes"], "router"]
    for role in roles:
        control_plane.alive(role)
    os.kill(server_workers(containers.name("web"))[0], signal.SIGSTOP)
    stopped_at = datetime.now(UTC).isoformat()
    podman("stop", *(containers.name(role) for role in roles), timeout=60)
    states = {role: containers.state(role) for role in roles}
    killed = "\n".join(f"--- {role}, stopped at {stopped_at}, ended at {containers.finished_at(role)}:\n"
                       f"{containers.logs(role)[-3000:]}" for role in roles if states[role] != ("exited", 0))
    assert states == {role: ("exited", 0) for role in roles}, killed
