"""Everything that claims work, under real concurrency on one PostgreSQL: 4 task workers (`manage.py db_worker`) and
2 web processes (gunicorn, as fly.toml runs them) while 200 teams are created through the members' API and
provisioned on the fake Fly API, then restarts are requested for half of them (as the admin's bulk action does),
and random workers are SIGKILLed (and replaced) throughout.

Afterwards: every team runs with exactly one app, volume and machine; every action succeeded, and ran once for
each time a worker took its task (again only after the worker that had it died); no task failed and none is left
running; no deadlock; no claim left on any row.
"""

import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.contrib.auth.hashers import make_password
from django.db import connection
from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from fakefly import FakeFly, Unavailable, serve
from instances.models import Instance, TeamAction
from instances.services import request_action
from teams.models import Team, TeamEvent

from .fly_processes import ORG, REPO, control_plane_env, manage_process
from .members import make_member
from .staff import PASSWORD
from .test_fly_backend import assert_one_of_each_per_team
from .ports import free_port

pytestmark = [
    pytest.mark.slow, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'",
                       reason="the claims under test are row locks (SELECT ... FOR UPDATE SKIP LOCKED) that only "
                              "PostgreSQL takes; SQLite runs one writer at a time"),
]

TEAMS = 200
WORKERS = 4
WEB_PROCESSES = 2
KILLS = 8  # at least
SETTLE_TIMEOUT = 300


class Fleet:
    """The worker and web processes, each writing its output to a file of its own."""

    def __init__(self, url: str, tmp_path):
        self.url, self.tmp_path = url, tmp_path
        self.workers: list[subprocess.Popen] = []
        self.web: list[tuple[subprocess.Popen, str]] = []
        self.started = 0

    def _log(self, name: str):
        return open(self.tmp_path / f"{name}.log", "wb")

    def start_worker(self) -> None:
        self.started += 1
        self.workers.append(manage_process(
            self.url, self.tmp_path / "state", "db_worker", "--no-reload", "--interval", "0.2",
            "--no-startup-delay", stdout=self._log(f"worker-{self.started}")))

    def start_web(self) -> None:
        port = free_port()
        env = control_plane_env(self.url, self.tmp_path / "state", CLOUDCTL_URLCONF="cloudctl.urls_public",
                                CLOUDCTL_MAX_TEAMS_PER_USER=str(TEAMS))
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "cloudctl.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--worker-class", "gthread", "--threads", "4"],
            cwd=REPO, env=env, stdout=self._log(f"web-{port}"), stderr=subprocess.STDOUT)
        self.web.append((process, f"http://127.0.0.1:{port}"))

    def kill_random_worker(self, rng: random.Random) -> None:
        victim = self.workers.pop(rng.randrange(len(self.workers)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.start_worker()

    def stop(self) -> None:
        for process in [*self.workers, *(process for process, _ in self.web)]:
            process.send_signal(signal.SIGTERM)
        for process in [*self.workers, *(process for process, _ in self.web)]:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_answering(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/accounts/login/", timeout=5)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def signed_in(url: str, email: str) -> httpx.Client:
    """A member's session (in the database, so every web process knows it) with its CSRF token set."""
    client = httpx.Client(base_url=url, timeout=60)
    client.get("/accounts/login/")
    answer = client.post("/accounts/login/", data={"login": email, "password": PASSWORD,
                                                   "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    assert answer.status_code == 302, answer.text[:500]
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    return client


def deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("select deadlocks from pg_stat_database where datname = current_database()")
        return cursor.fetchone()[0]


def settle(teams: list[Team]) -> None:
    """Wait until every team runs and no action or task is left to do, or one failed (nothing would retry it), or
    SETTLE_TIMEOUT passes."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline and not Instance.objects.filter(state=Instance.State.FAILED).exists() and (
            Instance.objects.filter(team__in=teams).exclude(state=Instance.State.RUNNING).exists()
            or TeamAction.objects.exclude(status__in=[TeamAction.Status.SUCCEEDED,
                                                      TeamAction.Status.FAILED]).exists()
            or DBTaskResult.objects.filter(status__in=[TaskResultStatus.READY, TaskResultStatus.RUNNING]).exists()):
        time.sleep(0.2)


@pytest.fixture
def fake_server():
    fake = FakeFly(orgs=(ORG,), time_scale=0.02, seed=15)
    for action in ("create_app", "create_volume", "create_machine", "get_machine"):
        fake.inject(action, Unavailable(503), probability=0.05)
    url, stop = serve(fake)
    yield fake, url
    stop()


def test_workers_and_web_processes_share_the_claims(fake_server, tmp_path):
    fake, url = fake_server
    creator = make_member("creator@example.com")
    # Checked by web processes on production's settings, which know only production's hashers.
    creator.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    creator.save(update_fields=["password"])
    deadlocks_before = deadlocks()
    fleet = Fleet(url, tmp_path)
    rng = random.Random(15)
    stop_killing = threading.Event()
    kills = []

    def kill_workers() -> None:
        while not stop_killing.wait(rng.uniform(0.5, 3.0)):
            fleet.kill_random_worker(rng)
            kills.append(time.monotonic())

    killer = threading.Thread(target=kill_workers)
    try:
        for _ in range(WEB_PROCESSES):
            fleet.start_web()
        for _ in range(WORKERS):
            fleet.start_worker()
        for _, web_url in fleet.web:
            wait_until_answering(web_url)
        clients = [signed_in(web_url, "creator@example.com") for _, web_url in fleet.web]

        def create(number: int) -> int:
            answer = clients[number % WEB_PROCESSES].post("/api/teams", json={"slug": f"load-{number}"})
            return answer.status_code

        killer.start()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(create, range(TEAMS)))
        assert statuses == [201] * TEAMS
        teams = list(Team.objects.filter(slug__startswith="load-"))
        settle(teams)
        restarts = [request_action(team, TeamAction.Kind.RESTART, actor="concurrency test")
                    for team in teams[::2]]
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while (TeamAction.objects.filter(status=TeamAction.Status.SUCCEEDED).count() < len(restarts) // 2
               and time.monotonic() < deadline):
            time.sleep(0.2)
        stop_killing.set()
        killer.join()
        settle(teams)
    finally:
        stop_killing.set()
        if killer.is_alive():
            killer.join()
        fleet.stop()

    assert len(kills) >= KILLS, "the test must really kill workers"
    stuck = list(Instance.objects.exclude(state=Instance.State.RUNNING).values_list("team__slug", "state"))
    assert stuck == []
    assert_one_of_each_per_team(fake, [team.pk for team in teams])
    assert list(DBTaskResult.objects.exclude(status=TaskResultStatus.SUCCESSFUL).values_list(
        "task_path", "status", "worker_ids")) == []
    assert TeamAction.objects.count() == len(restarts)
    assert list(TeamAction.objects.exclude(status=TeamAction.Status.SUCCEEDED).values_list(
        "team__slug", "status", "error")) == []
    for action in restarts:
        task = DBTaskResult.objects.get(task_path="instances.tasks.run_team_action", args_kwargs__args=[action.pk])
        runs = TeamEvent.objects.filter(team=action.team, kind=TeamEvent.Kind.RESTARTING).count()
        assert 1 <= runs <= len(task.worker_ids), (action.team.slug, runs, task.worker_ids)
    assert not Instance.objects.exclude(claimed_by="").exists()
    assert deadlocks() == deadlocks_before
