"""The container backend on this host's podman: real instance containers, the same behaviour as the other backends
(provision, stop, start, update with read-back, observe, destroy, orphans), the deploy and reconcile code unchanged
on it, and what isolates one team's container from another team and from the control plane.

Every container, volume and image made here carries this run's own name prefix and is removed at the end,
failed or not. These tests touch the Django database as every backend test does (teams, instances), nothing
PostgreSQL-specific: the SQLite pass is enough for them.
"""

import json
import os
import secrets
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from instances.backends import BackendError, ObservedState, host
from instances.machines import get_backend
from instances.models import Instance
from instances.provisioning import instance_for, provision
from instances.services import create_team_and_provision
from instances.specs import TOKEN_VARIABLE
from teams.tokens import rotate_team_token, team_token

from .images import INSTANCE_IMAGE, REPO, podman, require_image
from .instance_sso import as_tester
from .routing import as_router
from .test_instance import REGION, wait_for

CONTAINER = "instances.backends.container.ContainerBackend"
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONTROL_PLANE_SECRETS = {
    "DJANGO_SECRET_KEY": "control-plane-django-secret", "CLOUDCTL_TOKEN_KEYS": "control-plane-signing-key",
    "DATABASE_URL": "postgres://cloudctl:db-password@db/cloudctl", "CLOUDCTL_METRICS_TOKEN": "metrics-bearer",
}


@pytest.fixture(scope="module")
def run_prefix():
    """This run's names; everything carrying them is removed at the end, whatever happened."""
    prefix = f"cloudctl-container-test-{secrets.token_hex(4)}-"
    yield prefix
    for kind, listing in (("container", ["ps", "--all", "--format", "{{.Names}}"]),
                          ("volume", ["volume", "ls", "--format", "{{.Name}}"])):
        names = [name for name in podman(*listing, check=False).stdout.split() if name.startswith(prefix)]
        if names:
            podman(kind, "rm", "--force", *(["--volumes"] if kind == "container" else []), *names, check=False)


@pytest.fixture(scope="module")
def images(run_prefix):
    """The instance image, and a second one derived from it (a distinct image id), removed at the end."""
    first = require_image(INSTANCE_IMAGE) + ":latest"
    second = f"{INSTANCE_IMAGE}:{run_prefix}v2"
    built = podman("build", "--pull=never", "--quiet", "--tag", second, "--file", "-", ".", check=False,
                   input=f"FROM {first}\nLABEL cloudctl.test=second\n")
    assert built.returncode == 0, built.stderr
    yield first, second
    podman("rmi", "--force", second, check=False)


@pytest.fixture
def container(images, run_prefix, s3_env, forwarding_sso, settings, tmp_path, monkeypatch):
    """The container backend, its instances pointed at the live server (through the fake of its sign-in API) and
    the local S3, both on this host's 127.0.0.1; every team's container removed at the end."""
    for name, value in CONTROL_PLANE_SECRETS.items():
        monkeypatch.setenv(name, value)
    settings.MACHINE_BACKEND = CONTAINER
    settings.CONTAINER_NAME_PREFIX = run_prefix
    settings.STATE_DIR = tmp_path
    settings.INSTANCE_IMAGE = images[0]
    settings.PRIVATE_API_URL = forwarding_sso.url
    settings.INSTANCE_S3_ENDPOINT = s3_env.endpoint_url
    settings.INSTANCE_S3_REGION = REGION
    settings.INSTANCE_IDLE_TIMEOUT = ""
    get_backend.cache_clear()
    backend = get_backend()
    yield backend
    for instance in Instance.objects.all():
        backend.destroy(instance)
    get_backend.cache_clear()


def container_of(backend, instance) -> dict:
    return json.loads(podman("container", "inspect", backend.container_name(instance)).stdout)[0]


def volume_path(backend, instance) -> str:
    return podman("volume", "inspect", "--format", "{{.Mountpoint}}", backend.volume_name(instance)).stdout.strip()


def signed_in(backend, instance) -> dict[str, str]:
    return {**as_router(instance.team), **as_tester(volume_path(backend, instance))}


def in_container(backend, instance, code: str) -> str:
    """What a tenant's code prints, run inside the team's container (as its own user)."""
    result = podman("exec", backend.container_name(instance), "python", "-c", code, check=False, timeout=60)
    return result.stdout + result.stderr


def host_command_lines() -> list[bytes]:
    lines = []
    for entry in Path("/proc").iterdir():
        try:
            lines.append((entry / "cmdline").read_bytes())
        except OSError:
            continue
    return lines


CONNECT = """
import socket, sys
for host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=3).close()
        print(host, port, "connected")
    except OSError as error:
        print(host, port, "refused", error)
"""


def test_provision_stop_start_update_and_destroy_a_team_container(container, images):
    first, second = images
    team = create_team_and_provision("alpha")
    instance = provision(team, actor="test")
    assert instance.state == Instance.State.RUNNING
    assert container.observe(instance) is ObservedState.RUNNING and container.running_image(instance) == first
    assert container.inspect_many([instance])[team.pk].image == first
    assert httpx.get(instance.url, headers=signed_in(container, instance), timeout=10).status_code == 200
    assert httpx.get(instance.url, timeout=10).status_code == 403  # the router guard: only its router's requests
    with open(f"{volume_path(container, instance)}/kept.txt", "w") as kept:
        kept.write("on the team's volume")

    container.stop(instance)
    assert container.observe(instance) is ObservedState.STOPPED
    instance = provision(team, actor="test")  # a start goes through provisioning, as the lifecycle's does
    assert container.observe(instance) is ObservedState.RUNNING
    assert "on the team's volume" in in_container(container, instance, "print(open('/data/kept.txt').read())")

    previous = []
    resources = container.update(instance, second, before_change=previous.append)
    assert previous == [first] and container.running_image(instance) == second
    assert container_of(container, instance)["Image"] == podman(
        "image", "inspect", "--format", "{{.Id}}", second).stdout.strip()
    instance.resources.update(resources)
    assert httpx.get(instance.url, headers=signed_in(container, instance), timeout=10).status_code == 200
    assert container.update(instance, second, before_change=previous.append) == {} and previous == [first]

    container.stop(instance)
    container.update(instance, first)  # a stopped instance is moved without being started
    assert container.observe(instance) is ObservedState.STOPPED and container.running_image(instance) == first

    container.destroy(instance)
    assert container.observe(instance) is ObservedState.MISSING and container.running_image(instance) is None
    assert podman("volume", "exists", container.volume_name(instance), check=False).returncode != 0


def test_a_team_container_reaches_only_the_control_plane(container, s3_env, forwarding_sso, settings):
    team_a, team_b = create_team_and_provision("alpha"), create_team_and_provision("beta")
    a, b = provision(team_a, actor="test"), provision(team_b, actor="test")
    inspected = container_of(container, a)
    host = inspected["HostConfig"]
    assert host["NetworkMode"].startswith("slirp4netns") and host["ReadonlyRootfs"]
    assert host["Memory"] == 512 * 1024 ** 2 and host["PidsLimit"] == 256 and host["NanoCpus"] == 10 ** 9
    assert inspected["EffectiveCaps"] in ([], None) and not host["CapAdd"]  # --cap-drop ALL, nothing added back
    assert "no-new-privileges" in " ".join(host["SecurityOpt"])
    assert [binding["HostIp"] for binding in host["PortBindings"]["8080/tcp"]] == ["127.0.0.1"]
    assert inspected["Config"]["User"] == "65534:65534"

    # The team's token goes in through podman's own environment: never in a label, the command line podman
    # recorded, or any command line of this host (what `ps` shows every user).
    token = team_token(team_a)
    assert token not in str(inspected["Config"]["Labels"])
    assert token not in " ".join(inspected["Config"]["CreateCommand"])
    assert not any(token.encode() in cmdline for cmdline in host_command_lines())

    # Nothing of the control plane's environment is in the container's.
    environment = in_container(container, a, "import os; print(repr(dict(os.environ)))")
    for name, value in CONTROL_PLANE_SECRETS.items():
        assert name not in environment and value not in environment
    assert settings.SECRET_KEY not in environment
    assert s3_env.client_environ()["AWS_SECRET_ACCESS_KEY"] not in environment

    # From A's container: the private API and S3 answer; B's published port, another of this host's loopback
    # services, and B's port on the container's own loopback do not.
    api_port, s3_port = httpx.URL(forwarding_sso.url).port, httpx.URL(s3_env.endpoint_url).port
    b_port = b.resources["port"]
    printed = in_container(container, a, CONNECT.format(targets=[
        ("10.0.2.2", api_port), ("10.0.2.2", s3_port), ("10.0.2.2", b_port), ("10.0.2.2", 22),
        ("127.0.0.1", b_port), ("169.254.169.254", 80)]))
    assert f"10.0.2.2 {api_port} connected" in printed and f"10.0.2.2 {s3_port} connected" in printed, printed
    for blocked in (f"10.0.2.2 {b_port}", "10.0.2.2 22", f"127.0.0.1 {b_port}", "169.254.169.254 80"):
        assert f"{blocked} refused" in printed, printed

    # B's data is on B's volume only: A's container sees its own /data and no other file of this host's (not B's
    # volume, not the control plane's state directory with its secrets).
    with open(f"{volume_path(container, b)}/b-only.txt", "w") as secret_file:
        secret_file.write("team B's data")
    host_paths = [volume_path(container, b), "/var/lib/containers", str(settings.STATE_DIR), str(REPO / "var")]
    seen = in_container(container, a, f"""
import os
print(sorted(os.listdir('/data')))
print([os.path.exists(path) for path in {host_paths!r}])
""")
    assert "b-only.txt" not in seen and "[False, False, False, False]" in seen, seen
    # Nor can it change its firewall (no capability at all, CAP_NET_ADMIN included), and its root is read-only.
    tried = in_container(container, a, """
print([line.split()[1] for line in open("/proc/self/status") if line.startswith(("CapPrm", "CapEff"))])
print([line.split()[3].split(',')[0] for line in open('/proc/mounts') if line.split()[1] == '/'])
""")
    assert "['0000000000000000', '0000000000000000']" in tried and "['ro']" in tried, tried


def test_a_container_whose_firewall_cannot_be_set_never_starts(container, monkeypatch):
    # An address iptables refuses: the hook cannot load the rules.
    real = type(container).container_environment
    monkeypatch.setattr(type(container), "container_environment",
                        lambda self, instance, spec: (real(self, instance, spec)[0], [("10.0.2.999", 80)]))
    team = create_team_and_provision("alpha")
    with pytest.raises(BackendError, match="firewall could not be set"):
        provision(team, actor="test")
    instance = instance_for(team)
    assert instance.state == Instance.State.FAILED and container.observe(instance) is ObservedState.MISSING


def test_deploy_and_reconcile_work_unchanged_on_containers(container, images, run_prefix):
    from deploys.runner import run_deployment
    from deploys.services import start_deployment
    from instances.reconcile import reconcile, reconcile_instance

    first, second = images
    team = create_team_and_provision("alpha")
    provision(team, actor="test")

    deployment = run_deployment(start_deployment(second, canary=1, concurrency=1, actor="test"), actor="test")
    assert deployment.state == deployment.State.SUCCEEDED, deployment.message
    instance = instance_for(team)
    assert instance.image == second and container.running_image(instance) == second

    # Removed behind cloudctl's back: reconcile sees it missing and provisions it again, on the recorded image.
    podman("rm", "--force", container.container_name(instance))
    result = reconcile_instance(instance.pk, actor="test")
    assert result.observed is ObservedState.MISSING and result.restarted
    wait_for(lambda: container.observe(instance_for(team)) is ObservedState.RUNNING, timeout=120,
             message="the container made again")
    instance = instance_for(team)
    assert instance.state == Instance.State.RUNNING and container.running_image(instance) == second

    # A token rotated without the restart that follows it: reconcile makes the container anew on the new token,
    # which the instance exchanges (its health check passes only once it got credentials and serves).
    old_token, new_token = team_token(team), rotate_team_token(team)
    result = reconcile_instance(instance.pk, actor="test")
    assert "secret_behind" in [finding.kind for finding in result.findings]
    instance = instance_for(team)
    assert container.secret_generation(instance) == team.token_generation
    environment = in_container(container, instance, "import os; print(os.environ['CLOUDCTL_TOKEN'])")
    assert new_token in environment and old_token not in environment
    assert httpx.get(instance.url, headers=signed_in(container, instance), timeout=10).status_code == 200

    # A team gone from the database leaves an orphan the fleet pass reports and, with --prune, removes.
    team_id = team.pk
    Instance.objects.filter(pk=instance.pk).delete()
    team.delete()
    assert container.orphans(set()) == [f"{run_prefix}team-{team_id}"]
    findings = reconcile(actor="test", prune=True)
    assert ("orphan_app", f"{run_prefix}team-{team_id}") in [(finding.kind, finding.subject) for finding in findings]
    assert container.orphans(set()) == []
    assert podman("container", "exists", f"{run_prefix}team-{team_id}", check=False).returncode != 0


def test_the_control_plane_urls_are_rewritten_for_the_container_and_only_their_ports_let_through(tmp_path):
    """No podman needed: what the container is given, and its firewall, from a spec."""
    from instances.backends import container_firewall as firewall
    from instances.backends.container import ContainerBackend
    from instances.specs import InstanceSpec

    backend = ContainerBackend(state_dir=tmp_path)
    spec = InstanceSpec(team_id=7, image="localhost/cloudctl-instance:v1", region="", guest={}, secrets={"T": "s"},
                        env={"CLOUDCTL_URL": "http://127.0.0.1:8000", "CLOUDCTL_S3_ENDPOINT": "http://localhost:8333",
                             "CLOUDCTL_TEAM_URL": "http://alpha.localhost:8080/"})
    env, allowed = backend.container_environment(None, spec)
    assert env["CLOUDCTL_URL"] == "http://10.0.2.2:8000" and env["CLOUDCTL_S3_ENDPOINT"] == "http://10.0.2.2:8333"
    assert env["CLOUDCTL_TEAM_URL"] == "http://alpha.localhost:8080/"  # a browser's URL, not the container's
    assert "T" not in env and allowed == [("10.0.2.2", 8000), ("10.0.2.2", 8333)]
    rules = firewall.egress_rules(firewall.allowed_from(firewall.annotation(allowed))).splitlines()
    accepted = [rule for rule in rules if rule.startswith("-A OUTPUT -d 10.0.2.2/32")]
    assert accepted == ["-A OUTPUT -d 10.0.2.2/32 -p tcp --dport 8000 -j ACCEPT",
                        "-A OUTPUT -d 10.0.2.2/32 -p tcp --dport 8333 -j ACCEPT"]
    # Every other address of the host and of private networks is refused after them.
    assert rules.index("-A OUTPUT -d 10.0.0.0/8 -j REJECT") > rules.index(accepted[-1])

    env, allowed = backend.container_environment(None, InstanceSpec(
        team_id=7, image="i", region="", guest={}, secrets={},
        env={"CLOUDCTL_URL": "https://203.0.113.10", "CLOUDCTL_S3_ENDPOINT": "https://192.168.1.5:9000"}))
    assert env["CLOUDCTL_URL"] == "https://203.0.113.10"  # not this host's: left as it is
    assert ("192.168.1.5", 9000) in allowed  # a private S3 named by address is let through, before the refusals


def test_a_deploy_accepts_only_the_instance_images_tags(settings, tmp_path):
    from deploys.selectors import allowed_image_prefixes

    settings.MACHINE_BACKEND, settings.ALLOWED_IMAGE_PREFIXES = CONTAINER, []
    get_backend.cache_clear()
    try:
        assert allowed_image_prefixes() == ["localhost/cloudctl-instance:"]
    finally:
        get_backend.cache_clear()


def test_a_restore_previews_swaps_in_and_back_and_deletes_its_volume_on_containers(container, monkeypatch):
    team = create_team_and_provision("alpha")
    instance = provision(team, actor="test")
    live = Path(volume_path(container, instance))
    (live / "kept.txt").write_text("the live volume")
    restored = Path(container.create_restore_volume(instance, 7)["volume"])
    with closing(sqlite3.connect(restored / "restored.db")) as database, database:
        database.execute("CREATE TABLE rows (id INTEGER)")
        database.execute("INSERT INTO rows VALUES (1)")

    secret = secrets.token_urlsafe(24)
    url = container.start_preview(instance, 7, secret)["url"]
    assert container.start_preview(instance, 7, secret)["url"] == url  # idempotent: the same preview
    assert httpx.get(f"{url}restored/rows.json", timeout=10).status_code == 403
    assert httpx.get(f"{url}restored/rows.json", headers={"X-Cloudctl-Preview": "wrong"}, timeout=10).status_code == 403
    answer = httpx.get(f"{url}restored/rows.json?_shape=array", headers={"X-Cloudctl-Preview": secret}, timeout=10)
    assert answer.status_code == 200 and answer.json() == [{"rowid": 1, "id": 1}]
    preview = json.loads(podman("container", "inspect", container.preview_container_name(instance, 7)).stdout)[0]
    assert secret not in json.dumps(preview["Config"]["Cmd"]) and TOKEN_VARIABLE not in json.dumps(
        preview["Config"]["Env"])
    assert secret not in container.log_tail(instance, 200) + container.preview_log(instance, 7)

    resources = container.swap_in_restore(instance, 7)
    instance.resources.update(resources)
    assert not container.preview_running(instance, 7)
    assert container.observe(instance) is ObservedState.RUNNING
    assert "restored.db" in in_container(container, instance, "import os; print(os.listdir('/data'))")
    assert not (live / "kept.txt").exists()
    kept = container.restore_dir(instance, 7)
    assert (kept / "previous" / "kept.txt").read_text() == "the live volume"
    container.swap_in_restore(instance, 7)  # run again after a crash once it was done: nothing moves
    assert (kept / "previous" / "kept.txt").exists() and container.observe(instance) is ObservedState.RUNNING

    moves, replace = [], os.replace

    def crash_on_the_second_move(source, destination):
        moves.append(source)
        if len(moves) == 2:
            raise OSError("the worker died here")
        replace(source, destination)

    with monkeypatch.context() as patched, pytest.raises(OSError):
        patched.setattr(host.os, "replace", crash_on_the_second_move)
        container.swap_back_restore(instance, 7)  # the live volume moved out, the previous one not yet in
    instance.resources.update(container.swap_back_restore(instance, 7))
    assert "the live volume" in in_container(container, instance, "print(open('/data/kept.txt').read())")
    assert (kept / "replaced" / "restored.db").exists()

    container.delete_restore_volumes(instance, 7)
    assert podman("volume", "exists", container.restore_volume_name(instance, 7), check=False).returncode != 0
    assert (live / "kept.txt").exists() and container.observe(instance) is ObservedState.RUNNING
