"""An instance's spec: the one definition of what it runs with, which every backend receives and none assembles."""

import ast
import dataclasses
from pathlib import Path

import pytest

from instances.backends.fly import machine_config
from instances.machines import build_backend
from instances.models import Instance
from instances.specs import build_spec
from teams.routing import routing_secret
from teams.tokens import team_token

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "instances.backends.local.LocalBackend"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module)
    return modules


def names_used(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name)
    return names


BACKENDS = sorted((ROOT / "instances" / "backends").glob("*.py"))
# The apps a team's instance is run by; credentials (the private API) checks tokens and prints one for a command.
RUNNING_APPS = ("teams", "instances", "backups", "deploys")


def test_the_backends_are_where_these_tests_look():
    assert {path.name for path in BACKENDS} >= {"__init__.py", "base.py", "fly.py", "local.py"}


@pytest.mark.parametrize("path", BACKENDS, ids=lambda path: path.name)
def test_no_backend_imports_credentials(path):
    # Backends receive the instance's secrets in its spec: none makes a token, or reads anything else of the
    # credentials app.
    assert not {module for module in imported_modules(path)
                if module.split(".")[0] == "credentials" or module == "teams.tokens"}


def test_build_spec_is_the_only_maker_of_team_tokens():
    # teams/tokens.py defines the maker (and returns a new token from a rotation): every other caller counts.
    makers = {path.relative_to(ROOT).as_posix() for app in RUNNING_APPS for path in (ROOT / app).rglob("*.py")
              if "team_token" in names_used(path)} - {"teams/tokens.py"}
    assert makers == {"instances/specs.py"}


@pytest.fixture
def instance(make_team, settings):
    settings.INSTANCE_S3_ENDPOINT = "https://s3.internal"
    return Instance.objects.create(team=make_team(region="ams"), backend="instances.backends.local.LocalBackend",
                                   image="registry.fly.io/cloudctl-team:v7")


def test_the_spec_holds_the_instances_environment_and_its_token_as_a_secret(instance, settings):
    spec = build_spec(instance)

    assert spec.env == {
        "CLOUDCTL_URL": settings.PRIVATE_API_URL, "CLOUDCTL_TEAM_ID": str(instance.team_id),
        "CLOUDCTL_INSTANCE_VERSION": "registry.fly.io/cloudctl-team:v7",
        "CLOUDCTL_S3_REGION": settings.INSTANCE_S3_REGION, "CLOUDCTL_MAX_AGE": settings.INSTANCE_MAX_AGE,
        "CLOUDCTL_IDLE_TIMEOUT": settings.INSTANCE_IDLE_TIMEOUT, "CLOUDCTL_S3_ENDPOINT": "https://s3.internal",
        "CLOUDCTL_BACKUP_RETENTION": settings.BACKUP_RETENTION,
        "CLOUDCTL_HOSTNAME": f"{instance.team.slug}.{settings.TEAMS_DOMAIN}",
        "CLOUDCTL_HEALTH_CHECK_PATH": "/-/versions.json",
        "CLOUDCTL_TEAM_URL": f"https://{instance.team.slug}.{settings.TEAMS_DOMAIN}/",
        "CLOUDCTL_SSO_AUTHORIZE_URL": f"{settings.PUBLIC_URL}/sso/authorize",
        "CLOUDCTL_SSO_REVALIDATE_SECONDS": str(settings.SSO_REVALIDATE_SECONDS)}
    assert spec.secrets == {"CLOUDCTL_TOKEN": team_token(instance.team),
                            "CLOUDCTL_ROUTING_SECRET": routing_secret(instance.team_id)}
    assert routing_secret(instance.team_id) not in repr(spec)
    assert (spec.image, spec.region, spec.guest) == (instance.image, "ams", settings.FLY_GUEST)
    assert team_token(instance.team) not in repr(spec)


def test_both_backends_give_the_instance_its_spec(instance):
    spec = build_spec(instance)
    token = team_token(instance.team)

    fly_env = machine_config(spec, "vol-1", "launch-1")["env"]
    local_env = build_backend(LOCAL).instance_environment(instance, 8123)

    assert fly_env.items() >= spec.env.items() and token not in fly_env.values()  # Fly: an app secret
    assert local_env.items() >= {**spec.env, **spec.secrets}.items()


def test_a_backend_uses_the_spec_it_is_given(instance):
    given = build_spec(instance)
    given = dataclasses.replace(given, env={**given.env, "CLOUDCTL_URL": "http://given.test"},
                                secrets={"CLOUDCTL_TOKEN": "given-token"})

    env = build_backend(LOCAL, spec_for=lambda _: given).instance_environment(instance, 8123)

    assert env["CLOUDCTL_URL"] == "http://given.test" and env["CLOUDCTL_TOKEN"] == "given-token"
