import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from cloudctl.local_s3 import LocalS3Server, free_port_set
from credentials.broker import sts_client
from instances.services import create_team_and_provision
from teams.permissions import ensure_groups

from .instance_sso import TESTER, FakeSSO, member
from .staff import PASSWORD, force_staff_login


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory):
    """One real SeaweedFS (S3 + STS enforcing session policies) for the whole run."""
    server = LocalS3Server(tmp_path_factory.mktemp("seaweedfs"), ports=free_port_set())
    config = server.start()
    yield config
    server.stop()


@pytest.fixture
def s3_env(local_s3, settings, monkeypatch):
    """Points boto3 (and so the broker) at the local SeaweedFS for one test."""
    for name, value in local_s3.client_environ().items():
        monkeypatch.setenv(name, value)
    settings.BACKUP_BUCKET = local_s3.bucket
    settings.BACKUP_ROLE_ARN = local_s3.client_environ()["CLOUDCTL_BACKUP_ROLE_ARN"]
    sts_client.cache_clear()
    yield local_s3
    sts_client.cache_clear()


@pytest.fixture
def moto_aws(settings, monkeypatch):
    """moto's AWS: checks call shapes, enforces nothing (never use it to prove isolation)."""
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings.BACKUP_BUCKET = "moto-backups"
    settings.BACKUP_ROLE_ARN = "arn:aws:iam::123456789012:role/TeamBackupRole"
    sts_client.cache_clear()
    with mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="moto-backups")
        yield
    sts_client.cache_clear()


@pytest.fixture
def staff_client(client, django_user_model):
    """A staff member signed in with their second factor (see tests/staff.py), who may do everything the
    dashboard offers (tests/test_permissions.py: who may do what)."""
    operator = django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)
    ensure_groups()
    operator.groups.add(Group.objects.get(name="Fleet administrator"))
    force_staff_login(client, operator)
    return client


@pytest.fixture
def admin_client(client, admin_user):
    """pytest-django's admin_client, signed in with the second factor staff must pass."""
    force_staff_login(client, admin_user)
    return client


@pytest.fixture
def make_team(db):
    counter = iter(range(1, 100000))

    def make(slug=None, **fields):
        team = create_team_and_provision(slug or f"team-{next(counter)}")
        for name, value in fields.items():
            setattr(team, name, value)
        if fields:
            team.save()
        return team

    return make


@pytest.fixture
def post_credentials(client):
    """POST to the private API with a team token as a Bearer header."""

    def post(token, *, query="", **extra):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
        return client.post(f"/private/v1/credentials{query}", **headers, **extra)

    return post


@pytest.fixture
def clock():
    """Virtual time shared by the fake Fly API and the clients under test."""
    from fakefly import VirtualClock

    return VirtualClock()


@pytest.fixture
def fake(clock):
    """The fake Fly Machines API: org `acme`; `someone-elses` is an app name another org holds."""
    from fakefly import FakeFly

    return FakeFly(clock=clock, orgs=("acme",), foreign_apps=("someone-elses",))


@pytest.fixture
def fly(settings, fake, clock, monkeypatch):
    """Every FlyBackend built by get_backend talks to the in-process fake on virtual time (org `acme`), so
    provisioning, reconcile and deploys use it too."""
    import random

    from flyapi import FlyClient, RateLimiter
    from instances.machines import get_backend

    backend_path = "instances.backends.fly.FlyBackend"
    settings.MACHINE_BACKEND = backend_path
    settings.FLY_ORG = "acme"
    settings.INSTANCE_IMAGE = "registry.fly.io/cloudctl-team:v1"
    client = FlyClient(token="fly-token", transport=fake.transport(), clock=clock.now, sleep=clock.sleep,
                       rng=random.Random(0), limiter=RateLimiter(clock=clock.now, sleep=clock.sleep))
    monkeypatch.setattr("instances.backends.fly.make_client", lambda api_url, api_token: client)
    get_backend.cache_clear()
    yield get_backend(backend_path)
    get_backend.cache_clear()


@pytest.fixture
def forwarding_sso(live_server):
    """The control plane's sign-in API faked (tests/instance_sso.py), everything else forwarded to the live server:
    instances pointed here exchange their token for real, and the fake confirms `TESTER` as an owner of every team
    (tests sign in with `instance_sso.as_tester` or `member_cookies`)."""
    with FakeSSO(team_token=None, forward_to=live_server.url, everyone=member(TESTER, "owner")) as fake:
        yield fake


# What a test must use for the database to matter to it: without any of these, pytest-django refuses it the database.
DATABASE_FIXTURES = frozenset({"db", "transactional_db", "django_db_setup", "live_server"})


def uses_database(item: pytest.Item) -> bool:
    return item.get_closest_marker("django_db") is not None or bool(DATABASE_FIXTURES & set(item.fixturenames))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL pass runs the tests that touch the database; the others would only repeat, on the same code and
    the same processes, what the SQLite pass beside it runs (they are deselected there and reported so)."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return
    kept = [item for item in items if uses_database(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not uses_database(item)])
        items[:] = kept
