"""The whole flow on one machine: create_team -> database task worker -> local backend -> real instances.

Teams are created through the same function the commands use, provisioned by the real `db_worker`, and run
as real processes (Datasette + Litestream) that get their credentials from this test's live server.
"""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from backups.drills import drill_team
from backups.models import ReportedFingerprint
from backups.replicas import replica_window
from backups.restore import plan_restore
from backups.services import check_backup_freshness
from credentials.models import CredentialEvent
from instances.backends import ObservedState
from instances.machines import get_backend
from instances.models import Instance
from instances.provisioning import instance_for, provision
from instances.services import create_team_and_provision
from teams.tokens import rotate_team_token, team_token

from .database import database_url
from .instance_sso import as_tester
from .routing import as_router
from .test_instance import (
    LITESTREAM, REGION, admin_client, count_rows, needs_instance_venv, restored_copy, wait_for, wipe_prefix,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = [needs_instance_venv, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def local(s3_env, forwarding_sso, settings, tmp_path):
    """The local backend, its instances pointed at the live server (through the fake of its sign-in API, which
    confirms the tester: `signed_in`) and the local S3; all stopped at the end."""
    settings.MACHINE_BACKEND = "instances.backends.local.LocalBackend"
    settings.PRIVATE_API_URL = forwarding_sso.url
    settings.LOCAL_INSTANCES_DIR = tmp_path / "instances"
    settings.INSTANCE_S3_ENDPOINT = s3_env.endpoint_url
    settings.INSTANCE_S3_REGION = REGION
    settings.INSTANCE_IDLE_TIMEOUT = ""
    get_backend.cache_clear()
    backend = get_backend()
    yield backend
    for instance in Instance.objects.all():
        backend.destroy(instance)
    get_backend.cache_clear()


CONTROL_PLANE_SECRETS = {
    "DJANGO_SECRET_KEY": "control-plane-django-secret", "CLOUDCTL_TOKEN_KEYS": "control-plane-signing-key",
    "AWS_ACCESS_KEY_ID": "LOCALADMINKEYID", "AWS_SECRET_ACCESS_KEY": "control-plane-s3-admin-secret",
    "DATABASE_URL": "postgres://cloudctl:db-password@db/cloudctl", "CLOUDCTL_METRICS_TOKEN": "metrics-bearer",
    "CLOUDCTL_FLY_API_TOKEN": "fly-api-token",
}


@pytest.mark.parametrize("endpoint, bundle_kept", [("http://127.0.0.1:8333", False), ("https://s3.internal", True),
                                                   ("", True)])
def test_an_instance_environment_is_built_from_an_allow_list(monkeypatch, settings, make_team, endpoint,
                                                             bundle_kept):
    from instances.machines import build_backend

    for name, value in {**CONTROL_PLANE_SECRETS, "LANG": "C.UTF-8", "AWS_CA_BUNDLE": "/etc/ca.pem"}.items():
        monkeypatch.setenv(name, value)
    settings.INSTANCE_S3_ENDPOINT = endpoint
    instance = Instance.objects.create(team=make_team(), backend="instances.backends.local.LocalBackend")
    env = build_backend("instances.backends.local.LocalBackend").instance_environment(instance, 8123)
    assert not set(CONTROL_PLANE_SECRETS) & set(env)
    assert not any(secret in value for secret in CONTROL_PLANE_SECRETS.values() for value in env.values())
    assert env["LANG"] == "C.UTF-8"
    assert env["CLOUDCTL_TOKEN"] == team_token(instance.team) and env["PORT"] == "8123"
    # The docs' rule: a CA bundle for an https endpoint (or AWS), none for plain http.
    assert ("AWS_CA_BUNDLE" in env) == bundle_kept


def test_a_running_instance_holds_nothing_of_the_control_plane_in_its_environment(local, monkeypatch, settings):
    # The AWS variables stay the real ones (the local S3's admin keys, which this control plane uses for STS).
    invented = {name: value for name, value in CONTROL_PLANE_SECRETS.items() if not name.startswith("AWS_")}
    for name, value in invented.items():
        monkeypatch.setenv(name, value)
    team = create_team_and_provision("alpha")
    provision(team, actor="test")
    own = [*invented.values(), os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
           settings.SECRET_KEY, *settings.TOKEN_KEYS, settings.METRICS_TOKEN]
    processes = team_processes(team.pk)
    assert len(processes) >= 3  # the shell, Litestream, Datasette
    for pid in processes:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        names = {entry.split("=", 1)[0] for entry in environ.split("\0") if entry}
        assert not names & set(CONTROL_PLANE_SECRETS), (pid, names & set(CONTROL_PLANE_SECRETS))
        for secret in own:
            assert secret not in environ, pid


def run_worker():
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)


def team_processes(team_id: int) -> dict[int, int]:
    """pid -> process group of every live process started for the team (read from /proc) by this test: team ids
    repeat across the tests other processes run at the same time, so only processes whose home is under this
    test's LOCAL_INSTANCES_DIR count."""
    from django.conf import settings

    home = f"HOME={settings.LOCAL_INSTANCES_DIR}/".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if (f"CLOUDCTL_TEAM_ID={team_id}".encode() in environ and fields[0] != "Z"
                and any(entry.startswith(home) for entry in environ)):
            found[int(entry.name)] = int(fields[2])
    return found


def signed_in(instance) -> dict[str, str]:
    """The router's headers and the tester's sign-in (tests/instance_sso.py) for the instance."""
    return {**as_router(instance.team), **as_tester(instance.resources["volume"])}


def query(instance, sql: str):
    response = httpx.get(f"{instance.url}data/-/query.json", params={"sql": sql, "_shape": "array"}, timeout=10,
                         headers=signed_in(instance))
    response.raise_for_status()
    return response.json()


def test_two_teams_back_up_to_their_own_prefix_and_a_lost_volume_is_restored(local, s3_env, tmp_path, settings):
    admin = admin_client(s3_env)
    team_a, team_b = create_team_and_provision("alpha"), create_team_and_provision("beta")
    for team in (team_a, team_b):
        wipe_prefix(admin, s3_env.bucket, team.storage_prefix)
    run_worker()  # the real database worker runs both queued provisioning tasks

    a, b = instance_for(team_a), instance_for(team_b)
    assert (a.state, b.state) == (Instance.State.RUNNING, Instance.State.RUNNING)
    for instance in (a, b):
        assert httpx.get(instance.url, timeout=5, headers=signed_in(instance)).status_code == 200

    database = Path(a.resources["volume"]) / "data.db"
    with sqlite3.connect(database, timeout=30) as db:
        db.execute("create table notes (id integer primary key, body text)")
        db.executemany("insert into notes (body) values (?)", [(f"note {n}",) for n in range(200)])
    wait_for(lambda: count_rows(restored_copy(s3_env, team_a, "data.db", tmp_path / "a.db"), "notes") == 200,
             timeout=60, interval=1, message="team A's rows in its backup")
    # The fleet's retention is in the instance's Litestream config, and the control plane reads the replica.
    config = (Path(a.resources["volume"]) / ".cloudctl" / "litestream.yml").read_text()
    assert f"retention: {settings.BACKUP_RETENTION}" in config
    latest = plan_restore(team_a, database="data.db", actor="test")[1]
    assert latest.database_bytes > 0 and latest.point.time > timezone.now() - timedelta(minutes=5)
    keys_b = [item["Key"] for item in admin.list_objects_v2(
        Bucket=s3_env.bucket, Prefix=team_b.storage_prefix).get("Contents", [])]
    assert keys_b and all(key.startswith(f"{team_b.storage_prefix}data.db/") for key in keys_b)
    b_copy = restored_copy(s3_env, team_b, "data.db", tmp_path / "b.db")
    assert not sqlite3.connect(b_copy).execute("select name from sqlite_master where name='notes'").fetchall()

    # The volume is lost: stop, delete the data directory, provision again.
    local.stop(a)
    shutil.rmtree(a.resources["volume"])
    a = provision(team_a, actor="test")
    assert query(a, "select count(*) as n from notes") == [{"n": 200}]


def test_team_a_instance_is_denied_team_b_prefix(local, s3_env, settings, tmp_path):
    """Isolation for the real process: Litestream with A's own credential_process, pointed at B's path."""
    team_a, team_b = create_team_and_provision("alpha"), create_team_and_provision("beta")
    run_worker()
    a = instance_for(team_a)
    runtime = Path(a.resources["volume"]) / ".cloudctl"
    profile = runtime / "aws-config"  # the instance's own profile: credential_process = its helper
    config = tmp_path / "stolen.yml"
    config.write_text(
        "dbs:\n"
        f"  - path: {Path(a.resources['volume']) / 'data.db'}\n"
        "    replica:\n"
        f"      {{type: s3, bucket: {s3_env.bucket}, path: {team_b.storage_prefix}data.db, "
        f"endpoint: {s3_env.endpoint_url}, region: {REGION}, force-path-style: true}}\n")
    env = {"PATH": f"{LITESTREAM.parent}:/usr/bin:/bin", "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(profile),
           "AWS_PROFILE": "cloudctl", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true",
           "CLOUDCTL_URL": settings.PRIVATE_API_URL, "CLOUDCTL_TOKEN": team_token(team_a)}
    result = subprocess.run([str(LITESTREAM), "restore", "-config", str(config), "-o", str(tmp_path / "x.db"),
                             str(Path(a.resources["volume"]) / "data.db")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "AccessDenied" in result.stderr + result.stdout or "403" in result.stderr + result.stdout


def control_plane_env(settings, tmp_path) -> dict:
    """The environment of a control-plane process (worker, command) sharing this test's database and the
    `local` fixture's settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CLOUDCTL_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "cloudctl.settings",
        "DATABASE_URL": database_url(),
        "CLOUDCTL_STATE_DIR": str(tmp_path / "state"),
        "CLOUDCTL_TOKEN_KEYS": ",".join(settings.TOKEN_KEYS),
        "CLOUDCTL_PRIVATE_API_URL": settings.PRIVATE_API_URL,
        "CLOUDCTL_LOCAL_INSTANCES_DIR": str(settings.LOCAL_INSTANCES_DIR),
        "CLOUDCTL_INSTANCE_S3_ENDPOINT": settings.INSTANCE_S3_ENDPOINT,
        "CLOUDCTL_INSTANCE_S3_REGION": settings.INSTANCE_S3_REGION,
        "CLOUDCTL_INSTANCE_IDLE_TIMEOUT": "",
        # Instances get their routing secret and name from the spec, made by whichever process provisions.
        "CLOUDCTL_ROUTER_KEY": settings.ROUTER_KEY,
        "CLOUDCTL_TEAMS_DOMAIN": settings.TEAMS_DOMAIN,
        # The single sign-on's addresses in the spec: where the team is, where its visitors sign in.
        "CLOUDCTL_TEAMS_URL_SCHEME": settings.TEAMS_URL_SCHEME,
        "CLOUDCTL_TEAMS_URL_PORT": str(settings.TEAMS_URL_PORT),
        "CLOUDCTL_PUBLIC_URL": settings.PUBLIC_URL,
        "CLOUDCTL_SSO_REVALIDATE_SECONDS": str(settings.SSO_REVALIDATE_SECONDS),
    })
    return env


def provisioning_subprocess(slug: str, settings, tmp_path) -> subprocess.Popen:
    """`manage.py provision <slug> --now`: what the worker runs, as a process this test can kill."""
    return subprocess.Popen([sys.executable, "manage.py", "provision", slug, "--now"], cwd=REPO,
                            env=control_plane_env(settings, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def assert_one_instance_and_no_orphan(local, team, settings):
    groups = set(team_processes(team.pk).values())
    assert len(groups) == 1, f"processes of team {team.pk} in {len(groups)} groups: {team_processes(team.pk)}"
    assert sorted(p.name for p in Path(settings.LOCAL_INSTANCES_DIR).iterdir()) == [f"team-{team.pk}"]
    assert local.observe(instance_for(team)) is ObservedState.RUNNING


def test_a_worker_killed_mid_provisioning_is_finished_by_the_next_run(local, settings, tmp_path):
    team = create_team_and_provision("alpha")
    process = provisioning_subprocess("alpha", settings, tmp_path)
    pid_file = Path(settings.LOCAL_INSTANCES_DIR) / f"team-{team.pk}" / "instance.pid"
    try:
        wait_for(pid_file.exists, timeout=60, message="the instance process to be started")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert instance_for(team).state == Instance.State.PROVISIONING  # left half-done by the kill

    instance = provision(team, actor="test")  # takes over the dead run's lease; adopts the running process
    assert instance.state == Instance.State.RUNNING
    assert httpx.get(instance.url, timeout=5, headers=signed_in(instance)).status_code == 200
    assert_one_instance_and_no_orphan(local, team, settings)


def test_a_run_killed_between_the_start_and_saving_it_leaves_a_process_the_next_run_adopts(local, settings):
    """The window the test above hits only by chance (it failed a CI run): the instance runs and the database has
    none of its resources, so the next run learns its port from the process."""
    team = create_team_and_provision("alpha")
    instance = instance_for(team)
    local.ensure_volume(instance)
    started = local.ensure_running(instance)  # never saved: the run dies here
    assert "url" not in instance_for(team).resources

    instance = provision(team, actor="test")
    assert instance.state == Instance.State.RUNNING
    assert instance.url == started["url"]
    assert httpx.get(instance.url, timeout=5, headers=signed_in(instance)).status_code == 200
    assert_one_instance_and_no_orphan(local, team, settings)


def test_an_instance_killed_mid_provisioning_fails_with_its_reason_then_recovers(local, settings, tmp_path):
    team = create_team_and_provision("alpha")
    process = provisioning_subprocess("alpha", settings, tmp_path)
    pid_file = Path(settings.LOCAL_INSTANCES_DIR) / f"team-{team.pk}" / "instance.pid"
    wait_for(pid_file.exists, timeout=60, message="the instance process to be started")
    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode != 0, output
    failed = instance_for(team)
    assert failed.state == Instance.State.FAILED
    assert "exited during start" in failed.last_error

    instance = provision(team, actor="test")
    assert instance.state == Instance.State.RUNNING
    assert_one_instance_and_no_orphan(local, team, settings)


def test_a_deploy_restarts_a_running_team_once_for_no_longer_than_its_restart(local):
    import threading

    from deploys.models import DeploymentTarget
    from deploys.runner import run_deployment
    from deploys.services import start_deployment
    from instances.lifecycle import stop_instance

    running_team, stopped_team = create_team_and_provision("alpha"), create_team_and_provision("beta")
    run_worker()
    stop_instance(stopped_team, actor="test")
    url = instance_for(running_team).url
    probes: list[tuple[float, float, bool]] = []  # each request sent throughout the deploy: sent, returned, a 200?
    done = threading.Event()

    headers = signed_in(instance_for(running_team))

    def probe():
        # A long timeout: a slow answer under load is still an answer; only a refused or failed request is downtime.
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                sent = time.time()
                try:
                    answered = client.get(url, headers=headers).status_code == 200
                except httpx.HTTPError:
                    answered = False
                probes.append((sent, time.time(), answered))
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.5)
    try:
        deployment = run_deployment(start_deployment("v2", canary=1, concurrency=2, actor="test"), actor="test")
        time.sleep(0.5)
    finally:
        done.set()
        prober.join()

    assert deployment.state == deployment.State.SUCCEEDED, deployment.message
    running, stopped = instance_for(running_team), instance_for(stopped_team)
    assert local.running_image(running) == "v2" and running.url == url
    assert local.observe(stopped) is ObservedState.STOPPED and stopped.image == "v2"  # not woken
    target = DeploymentTarget.objects.get(deployment=deployment, team=running_team)
    restart_began, restart_ended = target.started_at.timestamp(), target.finished_at.timestamp()
    answers = [returned for _, returned, answered in probes if answered]
    longest_gap = max(later - earlier for earlier, later in zip(answers, answers[1:]))
    print(f"\nlongest gap in answers during the deploy: {longest_gap:.2f} s; "
          f"the team's restart: {restart_ended - restart_began:.2f} s")
    assert longest_gap > 0.2  # it did restart
    # Down no longer than its restart: every request sent before the restart began or after it ended was answered
    # (compared as events, not durations, which a loaded machine stretches on either side).
    unanswered_outside = [(sent, returned) for sent, returned, answered in probes
                          if not answered and (returned < restart_began or sent > restart_ended)]
    assert unanswered_outside == [] and any(sent > restart_ended for sent, _, answered in probes if answered)
    local.start(stopped)
    assert local.running_image(stopped) == "v2"  # the stopped team wakes up on the new version


class Releases:
    """Instance versions as releases the local backend starts: a version marked broken (for every team, or for one
    team) exits at start with an error, as a release that cannot start would. The backend runs the instance through
    this wrapper of the instance interpreter, which reads the marks when each process starts."""

    def __init__(self, directory: Path, interpreter: str):
        self.marks = directory / "cannot-start"
        self.marks.mkdir(parents=True)
        self.python = directory / "bin" / "python"
        self.python.parent.mkdir()
        self.python.write_text(
            "#!/bin/sh\n"
            f'for mark in "{self.marks}/$CLOUDCTL_INSTANCE_VERSION" '
            f'"{self.marks}/$CLOUDCTL_TEAM_ID-$CLOUDCTL_INSTANCE_VERSION"; do\n'
            '  if [ -e "$mark" ]; then\n'
            '    echo "cloudctl-instance: FAILED: version $CLOUDCTL_INSTANCE_VERSION cannot start" >&2; exit 1\n'
            "  fi\n"
            "done\n"
            f'exec "{interpreter}" "$@"\n')
        self.python.chmod(0o755)

    def cannot_start(self, version: str, team=None) -> None:
        (self.marks / (f"{team.pk}-{version}" if team else version)).touch()


@pytest.fixture
def releases(local, settings, tmp_path):
    releases = Releases(tmp_path / "releases", settings.LOCAL_INSTANCE_PYTHON)
    settings.LOCAL_INSTANCE_PYTHON = str(releases.python)
    return releases


def answers(instance) -> bool:
    try:
        return httpx.get(instance.url, timeout=10, headers=signed_in(instance)).status_code == 200
    except httpx.HTTPError:
        return False


def instance_status(team) -> str:
    from io import StringIO

    out = StringIO()
    call_command("instance", team.slug, "status", stdout=out)
    return out.getvalue()


def test_a_halted_deploy_leaves_each_canary_team_running_its_previous_version(local, releases):
    """Issue 11.4: the new version exits at start; the rollback must really start the previous one."""
    from deploys.models import Deployment, DeploymentTarget
    from deploys.runner import run_deployment
    from deploys.services import start_deployment

    teams = [create_team_and_provision(f"team-{number}") for number in range(4)]
    run_worker()
    previous = instance_for(teams[0]).image
    releases.cannot_start("v2")

    deployment = run_deployment(start_deployment("v2", canary=2, concurrency=2, actor="test"), actor="test")

    assert deployment.state == Deployment.State.HALTED, deployment.message
    assert "2 rolled back" in deployment.message
    canary = list(DeploymentTarget.objects.filter(deployment=deployment, wave=0))
    assert len(canary) == 2
    for target in canary:
        assert target.step == DeploymentTarget.Step.ROLLED_BACK, target.error
        assert "exited during start" in target.error
    for team in teams:  # the canary teams are back, the others were never touched: all run the previous version
        instance = instance_for(team)
        assert local.running_image(instance) == instance.image == previous, team.slug
        assert answers(instance), team.slug
        assert "running" in instance_status(team) and "backend sees running" in instance_status(team)


def test_a_rollback_that_cannot_start_the_previous_version_is_reported_failed(local, releases):
    from deploys.models import Deployment, DeploymentTarget
    from deploys.runner import run_deployment
    from deploys.services import start_deployment

    healthy, failing = create_team_and_provision("alpha"), create_team_and_provision("beta")
    run_worker()
    previous = instance_for(healthy).image
    releases.cannot_start("v2", failing)  # the image fails on one canary team: the deployment halts
    releases.cannot_start(previous, healthy)  # and the other cannot go back (its start would fail for any reason)

    deployment = run_deployment(start_deployment("v2", canary=2, concurrency=2, actor="test"), actor="test")

    assert deployment.state == Deployment.State.HALTED, deployment.message
    assert "1 rolled back, 1 rollback failures" in deployment.message
    target = DeploymentTarget.objects.get(deployment=deployment, team=healthy)
    assert target.step == DeploymentTarget.Step.ROLLBACK_FAILED
    assert f"version {previous} cannot start" in target.error
    assert local.running_image(instance_for(healthy)) is None and not answers(instance_for(healthy))
    assert "backend sees crashed" in instance_status(healthy)
    back = DeploymentTarget.objects.get(deployment=deployment, team=failing)
    assert back.step == DeploymentTarget.Step.ROLLED_BACK
    assert local.running_image(instance_for(failing)) == previous and answers(instance_for(failing))


def test_hostile_tenants_neither_block_nor_halt_a_deploy(local):
    """Issue 10.8: a file `*.db` that is no SQLite database, planted on a team's own volume, makes its entrypoint
    exit whatever the version. A team crashing so before the deploy is skipped; one running until its update
    restarts it (the canary here) fails on its previous version too: a tenant fault, and the rollout goes on."""
    from deploys.models import Deployment, DeploymentTarget
    from deploys.runner import run_deployment
    from deploys.services import start_deployment
    from instances.backends import BackendError
    from teams.models import TeamEvent

    hostile, crashed, *others = [create_team_and_provision(slug) for slug in ("hostile", "crashed", "gamma", "delta")]
    run_worker()
    previous = instance_for(hostile).image
    for team in (hostile, crashed):
        (Path(instance_for(team).resources["volume"]) / "planted.db").write_bytes(b"not a database\n" * 100)
    local.stop(instance_for(crashed))  # restarted since (a wake from scale to zero): it exits at once
    with pytest.raises(BackendError, match="exited during start"):
        local.start(instance_for(crashed))

    deployment = run_deployment(start_deployment("v2", canary=1, concurrency=2, max_failures=0, actor="test"),
                                actor="test")

    assert deployment.state == Deployment.State.SUCCEEDED, deployment.message
    assert deployment.message == "2 updated, 1 tenant faults (failing on their previous image too), 1 skipped"
    targets = {target.team_id: target for target in DeploymentTarget.objects.filter(deployment=deployment)}
    skipped = targets[crashed.pk]
    assert (skipped.step, skipped.error) == (DeploymentTarget.Step.SKIPPED, "unhealthy before the update: it crashed")
    fault = targets[hostile.pk]
    assert (fault.step, fault.wave) == (DeploymentTarget.Step.TENANT_FAULT, 0), fault.error
    on_new, on_previous = fault.error.split(f"\nand on its previous image {previous}: ")
    assert on_new.endswith("planted.db is not a usable SQLite database: file is not a database")
    assert on_previous.endswith("planted.db is not a usable SQLite database: file is not a database")
    assert instance_for(hostile).image == previous and local.running_image(instance_for(hostile)) is None
    # The hostile canary proved nothing about v2: a running team took its place before the rest were touched.
    assert targets[others[0].pk].wave == 0 and targets[others[1].pk].wave == 1
    assert targets[others[0].pk].finished_at <= targets[others[1].pk].started_at
    for team in others:
        instance = instance_for(team)
        assert targets[team.pk].step == DeploymentTarget.Step.UPDATED
        assert local.running_image(instance) == instance.image == "v2" and answers(instance)
    assert TeamEvent.objects.filter(team=hostile, kind="deploy_tenant_fault", is_error=True).exists()


def test_an_update_killed_between_the_stop_and_the_start_is_finished_by_the_next(local, monkeypatch):
    """A deploy killed mid-restart leaves the team stopped: `deploy --resume` must start it, not take it for a
    team stopped on purpose. A stop on purpose is never undone by an update."""
    from instances.backends.local import LocalBackend

    team = create_team_and_provision("alpha")
    run_worker()

    def killed(self, instance, image):
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalBackend, "_start_on", killed)
    with pytest.raises(KeyboardInterrupt):
        local.update(instance_for(team), "v2")
    monkeypatch.undo()
    assert local.observe(instance_for(team)) is ObservedState.STOPPED

    instance = instance_for(team)  # as the resumed run reads it
    local.update(instance, "v2")
    assert local.running_image(instance) == "v2" and answers(instance)

    local.stop(instance)
    local.update(instance, "v3")
    assert local.running_image(instance) is None and instance.image == "v3"


def test_an_update_whose_start_another_start_overtook_fails(local, monkeypatch):
    """A provisioning run may start the team between the update's stop and its start, on the version the
    database still names: the update adopts that process, and must not report the new version."""
    from instances.backends import BackendError
    from instances.backends.local import LocalBackend

    team = create_team_and_provision("alpha")
    run_worker()
    previous = instance_for(team).image
    terminate = LocalBackend._terminate

    def overtaken(self, instance):
        terminate(self, instance)
        self.ensure_running(instance_for(team))

    monkeypatch.setattr(LocalBackend, "_terminate", overtaken)
    with pytest.raises(BackendError, match=f"its process runs {previous} instead of v2"):
        local.update(instance_for(team), "v2")


def test_an_instance_that_runs_but_does_not_answer_is_unhealthy(local, settings):
    team = create_team_and_provision("alpha")
    run_worker()
    instance = instance_for(team)
    assert local.health_problem(instance) is None
    settings.INSTANCE_HEALTH_TIMEOUT = 2
    local = get_backend()  # built again, with it
    pgid = int((local.team_dir(instance) / "instance.pid").read_text())
    os.killpg(pgid, signal.SIGSTOP)  # alive, and answering nothing
    try:
        problem = local.health_problem(instance)
    finally:
        os.killpg(pgid, signal.SIGCONT)
    assert problem == f"it runs but fails its health check: no HTTP 200 from {instance.url} within 2s"


def litestream_pid(team_id: int) -> int:
    return next(pid for pid in team_processes(team_id) if Path(f"/proc/{pid}/comm").read_text().strip() == "litestream")


def test_teams_whose_litestream_stops_or_whose_signal_url_is_revoked_are_flagged_stale(local, settings):
    """Real heartbeats from real Litestream: one team's Litestream is killed, the other's token (and so its
    heartbeat URL) is rotated under it. Both are flagged once the threshold passes, not before."""
    settings.BACKUP_STALE_AFTER = 90
    killed, revoked = create_team_and_provision("alpha"), create_team_and_provision("beta")
    run_worker()
    for team in (killed, revoked):
        wait_for(lambda team=team: Instance.objects.get(team=team).last_backup_at, timeout=90,
                 message=f"{team.slug}'s first heartbeat")
    os.kill(litestream_pid(killed.pk), signal.SIGKILL)
    rotate_team_token(revoked)
    last_heartbeat = {team.pk: Instance.objects.get(team=team).last_backup_at for team in (killed, revoked)}

    flagged = {}
    while len(flagged) < 2:
        for team in check_backup_freshness(actor="test"):
            flagged[team.pk] = timezone.now()
        assert timezone.now() - min(last_heartbeat.values()) < timedelta(seconds=200), "never flagged"
        time.sleep(1)
    for team_id, when in flagged.items():
        late = when - last_heartbeat[team_id]
        assert timedelta(seconds=90) <= late <= timedelta(seconds=90 + 15), (team_id, late)
        assert Instance.objects.get(team_id=team_id).last_backup_at == last_heartbeat[team_id]
    # The revoked team's Litestream kept pinging: each ping was refused and recorded.
    assert CredentialEvent.objects.filter(team=revoked, kind="refused", signal="backup", reason="revoked").exists()
    # Datasette still serves the killed team: only its backups stopped.
    assert httpx.get(instance_for(killed).url, timeout=10, headers=signed_in(instance_for(killed))).status_code == 200


def test_a_running_instance_reports_its_fingerprint_and_the_drill_matches_it(local, settings):
    """The real instance fingerprints its database at a txid its Litestream synced and reports it; the drill
    restores exactly that txid from the replica and finds the same fingerprint."""
    settings.INSTANCE_FINGERPRINT_INTERVAL = "1s"
    team = create_team_and_provision("alpha")
    run_worker()
    instance = instance_for(team)
    with sqlite3.connect(Path(instance.resources["volume"]) / "data.db", timeout=30) as db:
        db.execute("create table notes (id integer primary key, body text)")
        db.executemany("insert into notes (body) values (?)", [(f"note {n}",) for n in range(200)])
    reported = wait_for(lambda: ReportedFingerprint.objects.filter(
        team=team, database="data.db", fingerprint__tables={"notes": 200}).first(), timeout=60, interval=0.5,
        message="the instance's fingerprint report after its rows")
    # The instance reports once its Litestream wrote the txid locally; the upload may still be on its way, and a
    # drill restores only what the replica holds (a drill before it compares nothing and the next one does).
    wait_for(lambda: replica_window(team, "data.db", actor="test").newest.txid >= reported.txid, timeout=60,
             interval=0.5, message="the reported txid in the replica")
    drill = drill_team(team, actor="test")
    assert drill.passed and drill.fingerprint_matched is True, drill.message
    assert int(drill.restored_txid, 16) == reported.txid and drill.fingerprint == reported.fingerprint


def test_an_idle_instance_reports_its_scale_to_zero(local, settings):
    """datasette-scale-to-zero exits the idle instance and POSTs its report to the signal URL first."""
    settings.INSTANCE_IDLE_TIMEOUT = "3s"
    team = create_team_and_provision("alpha")
    run_worker()
    instance = wait_for(lambda: Instance.objects.filter(team=team, scaled_to_zero_at__isnull=False).first(),
                        timeout=60, message="the scale-to-zero report")
    assert instance.scaled_to_zero_reason == "idle for 3s"
    assert instance.backups_expected_since is None
    wait_for(lambda: local.observe(instance) is ObservedState.STOPPED, timeout=30, message="the instance to exit")
    assert not CredentialEvent.objects.filter(team=team, kind="refused").exists()


def test_reconcile_restarts_a_crashed_local_instance_and_leaves_a_crash_loop_failed(local, settings):
    """The one reconciler keeps local instances too: a crash is recorded and restarted through provisioning, until
    the crash loop limit, where the instance is left failed; `requeue_after` follows."""
    from instances.backends.local import _group_members
    from instances.reconcile import CRASH_LOOP_LIMIT, REPORTED, REQUEUE_LATER, REQUEUE_SOON, reconcile_instance
    from teams.models import TeamEvent

    team = create_team_and_provision("alpha")
    run_worker()
    instance = instance_for(team)
    assert reconcile_instance(instance.pk, actor="test").requeue_after == REQUEUE_LATER

    def crash():
        # Every process of the instance but the shell that leads its group, which records the exit code (137).
        pgid = int((Path(settings.LOCAL_INSTANCES_DIR) / f"team-{team.pk}" / "instance.pid").read_text())
        for pid in _group_members(pgid):
            if pid != pgid:
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: local.observe(instance_for(team)) is ObservedState.CRASHED, timeout=30,
                 message="the instance to be seen crashed")

    for _ in range(CRASH_LOOP_LIMIT - 1):
        crash()
        result = reconcile_instance(instance.pk, actor="test")
        assert [finding.kind for finding in result.findings] == ["crashed"] and result.restarted
        assert result.requeue_after == REQUEUE_SOON
        assert instance_for(team).state == Instance.State.RUNNING
        assert_one_instance_and_no_orphan(local, team, settings)

    crash()
    result = reconcile_instance(instance.pk, actor="test")
    assert [(finding.kind, finding.outcome) for finding in result.findings] == [("crash_loop", REPORTED)]
    assert not result.restarted and result.requeue_after == REQUEUE_LATER
    assert instance_for(team).state == Instance.State.FAILED
    assert TeamEvent.objects.filter(team=team, kind="crashed").count() == CRASH_LOOP_LIMIT
    assert reconcile_instance(instance.pk, actor="test").findings == []  # left failed: no restart
    assert local.observe(instance_for(team)) is ObservedState.CRASHED
