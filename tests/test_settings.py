import os
import subprocess
import sys

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": "x9!production-secret-key-that-is-long-and-random-enough-0123456789abcdef",
    "DJANGO_ALLOWED_HOSTS": "cloudctl.example.com,cloudctl.internal",
    "CLOUDCTL_HTTPS": "true",
    "CLOUDCTL_TOKEN_KEYS": "production-token-key-1",
    "CLOUDCTL_BACKUP_BUCKET": "tenant-backups-prod",
    "CLOUDCTL_BACKUP_ROLE_ARN": "arn:aws:iam::123456789012:role/TeamBackupRole",
    # What every machine of a fleet shares (fly.toml's secrets): without one, `check --deploy` fails (cloudctl.E006).
    "DATABASE_URL": "postgres://cloudctl:pw@db.internal:5432/cloudctl",
    "CLOUDCTL_ROUTER_KEY": "production-router-key-1",
    "CLOUDCTL_METRICS_TOKEN": "production-metrics-token-1",
}
# Each of these falls back to a value of the machine's own when unset (a secret generated into its state dir, a
# SQLite file there): machines of one deployment would disagree on it.
FLEET_SHARED = ("DATABASE_URL", "DJANGO_SECRET_KEY", "CLOUDCTL_TOKEN_KEYS", "CLOUDCTL_ROUTER_KEY",
                "CLOUDCTL_METRICS_TOKEN")


def manage(*args, env):
    base = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CLOUDCTL_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, capture_output=True, text=True,
        env={**base, "DJANGO_SETTINGS_MODULE": "cloudctl.settings", **env},
    )


def test_production_settings_pass_check_deploy_without_warnings(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env={
        **PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def check_deploy_flags(env, tmp_path) -> list[str]:
    """The cloudctl.E006 lines of a failed `check --deploy` (with a hint)."""
    result = manage("check", "--deploy", env={**env, "CLOUDCTL_STATE_DIR": str(tmp_path)})
    output = result.stderr + result.stdout
    assert result.returncode != 0, output
    assert "HINT" in output
    return [line for line in output.splitlines() if "cloudctl.E006" in line]


@pytest.mark.parametrize("missing", FLEET_SHARED)
def test_check_deploy_fails_without_each_setting_a_fleet_shares(tmp_path, missing):
    """Unset, a machine would use a value of its own: another machine's sessions, team tokens, routing secrets,
    metrics scrapes (or its whole database) would not work on it."""
    [line] = check_deploy_flags({key: value for key, value in PRODUCTION_ENV.items() if key != missing}, tmp_path)
    assert missing in line
    assert not [name for name in FLEET_SHARED if name != missing and name in line], line


@pytest.mark.parametrize("empty", [name for name in FLEET_SHARED if name != "DATABASE_URL"])
def test_an_empty_shared_secret_fails_check_deploy_as_a_missing_one(tmp_path, empty):
    """The settings take an empty secret as unset and generate one per machine, so the check does too (an empty
    DATABASE_URL does not start at all)."""
    [line] = check_deploy_flags({**PRODUCTION_ENV, empty: ""}, tmp_path)
    assert empty in line


def test_check_deploy_names_every_missing_shared_setting_and_plain_check_none(tmp_path):
    bare = {key: value for key, value in PRODUCTION_ENV.items() if key not in FLEET_SHARED}
    deploy = manage("check", "--deploy", env={**bare, "CLOUDCTL_STATE_DIR": str(tmp_path)})
    flagged = [line for line in (deploy.stderr + deploy.stdout).splitlines() if "cloudctl.E006" in line]
    assert sorted(name for name in FLEET_SHARED if any(name in line for line in flagged)) == sorted(FLEET_SHARED)
    # The embedded run on one machine generates them, as it always did: only a deployment must set them.
    plain = manage("check", env={**bare, "CLOUDCTL_STATE_DIR": str(tmp_path)})
    assert plain.returncode == 0 and "cloudctl.E006" not in plain.stderr + plain.stdout, plain.stderr


def test_fly_toml_and_the_readme_list_every_setting_a_fleet_shares():
    fly_toml = (REPO / "fly.toml").read_text()
    secrets_comment = "\n".join(line for line in fly_toml.splitlines() if line.startswith("#"))
    [readme] = [paragraph for paragraph in (REPO / "README.md").read_text().split("\n\n")
                if paragraph.startswith("**Shared by every machine of a deployment**")]
    for name in FLEET_SHARED:
        assert name in secrets_comment, name
        assert f"`{name}`" in readme, name


def test_embedded_defaults_are_flagged_by_check_deploy(tmp_path):
    """The embedded run serves plain HTTP on localhost: check --deploy must say it is not production-ready."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", env={"CLOUDCTL_STATE_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT" in result.stderr + result.stdout


def test_embedded_defaults_generate_and_keep_secrets(tmp_path):
    show = "from django.conf import settings; print(settings.SECRET_KEY); print(settings.TOKEN_KEYS)"
    first = manage("shell", "--no-imports", "-c", show, env={"CLOUDCTL_STATE_DIR": str(tmp_path)})
    second = manage("shell", "--no-imports", "-c", show, env={"CLOUDCTL_STATE_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.splitlines()[0]) >= 50
    assert oct((tmp_path / "secrets" / "token-key").stat().st_mode)[-3:] == "600"


def test_database_url_selects_postgres(tmp_path):
    show = "from django.conf import settings; d = settings.DATABASES['default']; print(d['ENGINE'], d['NAME'], d['HOST'])"
    result = manage("shell", "--no-imports", "-c", show, env={
        "CLOUDCTL_STATE_DIR": str(tmp_path), "DATABASE_URL": "postgres://cloudctl:pw@db.internal:5432/cloudctl"})
    assert result.stdout.split() == ["django.db.backends.postgresql", "cloudctl", "db.internal"]


def test_bad_credentials_settings_fail_the_checks(tmp_path):
    result = manage("check", env={**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path),
                                  "CLOUDCTL_CREDENTIALS_TTL": "50000", "CLOUDCTL_TEAM_RATE_LIMIT": "lots"})
    assert result.returncode != 0
    assert "credentials.E001" in result.stderr and "credentials.E002" in result.stderr


@pytest.mark.parametrize("retention", ["7d", "0h", "1h30m", ""])
def test_a_backup_retention_litestream_would_refuse_fails_the_checks(tmp_path, retention):
    result = manage("check", env={**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path),
                                  "CLOUDCTL_BACKUP_RETENTION": retention})
    assert result.returncode != 0
    assert "backups.E001" in result.stderr


def test_a_negative_restore_keep_period_fails_the_checks(tmp_path):
    result = manage("check", env={**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path),
                                  "CLOUDCTL_RESTORE_KEEP_DAYS": "-1"})
    assert result.returncode != 0
    assert "backups.E002" in result.stderr


def test_the_private_api_process_carries_no_sign_in_machinery(tmp_path):
    """allauth insists on its middleware wherever it is installed; the private API's slim stack leaves both out."""
    env = {**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path), "CLOUDCTL_URLCONF": "cloudctl.urls_private"}
    assert manage("check", env=env).returncode == 0
    show = "from django.conf import settings; print(settings.MIDDLEWARE); print(settings.INSTALLED_APPS)"
    result = manage("shell", "--no-imports", "-c", show, env=env)
    assert result.returncode == 0, result.stderr
    for part in ("allauth", "Session", "cloudctl.accounts"):
        assert part not in result.stdout, part


def test_a_bad_login_rate_limit_fails_the_checks(tmp_path):
    # Unreadable; keyed by something a sign-in attempt does not have; no lock per account.
    for value in ("lots", "5/15m/user", "20/15m/ip"):
        result = manage("check", env={**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path),
                                      "CLOUDCTL_LOGIN_FAILED_RATE_LIMIT": value})
        assert result.returncode != 0, value
        assert "cloudctl.E001" in result.stderr, value


def test_mail_goes_to_files_in_the_state_dir_unless_email_url_is_set(tmp_path):
    """Without EMAIL_URL no SMTP server is assumed (a password reset would be a 500): messages are files."""
    result = manage("sendtestemail", "someone@example.com", env={"CLOUDCTL_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    (message,) = (tmp_path / "mail").iterdir()
    assert "someone@example.com" in message.read_text()
    result = manage("shell", "--no-imports", "-c", "from django.conf import settings; print(settings.EMAIL_BACKEND, settings.EMAIL_HOST)",
                    env={"CLOUDCTL_STATE_DIR": str(tmp_path), "EMAIL_URL": "smtp+tls://user:pw@mail.example.com:587"})
    assert result.stdout.split() == ["django.core.mail.backends.smtp.EmailBackend", "mail.example.com"]


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_the_state_dir_and_its_secrets_are_private(tmp_path):
    """Secrets 0600 in 0700 directories, whatever the umask, files made earlier with looser modes included."""
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True, mode=0o755)
    state.chmod(0o755)
    (state / "secrets").chmod(0o755)
    (state / "secrets" / "token-key").write_text("kept-from-an-earlier-run")
    (state / "secrets" / "token-key").chmod(0o644)
    connect = "from django.db import connection; connection.ensure_connection(); print('ok')"
    result = manage("shell", "--no-imports", "-c", connect, env={"CLOUDCTL_STATE_DIR": str(state)})
    assert result.stdout.strip() == "ok", result.stderr
    assert mode(state) == mode(state / "secrets") == "0o700"
    for name in ("token-key", "django-secret-key", "metrics-token"):
        assert mode(state / "secrets" / name) == "0o600", name
    assert (state / "secrets" / "token-key").read_text() == "kept-from-an-earlier-run"
    assert mode(state / "cloudctl.sqlite3") == "0o600"


def test_the_embedded_stack_writes_its_keys_and_password_privately(settings, tmp_path):
    from cloudctl.management.commands import dev

    settings.STATE_DIR = tmp_path / "state"
    settings.EMBEDDED_ENV_FILE = settings.STATE_DIR / "embedded.env"
    previous = os.umask(0o022)
    try:
        dev._write_embedded_env({"AWS_SECRET_ACCESS_KEY": "local-admin-secret"})
        password = dev._admin_password()
    finally:
        os.umask(previous)
    assert mode(settings.STATE_DIR) == mode(settings.STATE_DIR / "secrets") == "0o700"
    assert mode(settings.EMBEDDED_ENV_FILE) == mode(settings.STATE_DIR / "secrets" / "admin-password") == "0o600"
    assert settings.EMBEDDED_ENV_FILE.read_text() == "AWS_SECRET_ACCESS_KEY=local-admin-secret\n"
    assert dev._admin_password() == password

def test_bad_server_settings_fail_the_checks(tmp_path):
    result = manage("check", env={**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path),
                                  "CLOUDCTL_SERVER_BODY_TIMEOUT": "0", "CLOUDCTL_SERVER_CONNECTIONS_PER_SOURCE": "-1",
                                  "CLOUDCTL_SERVER_MAX_BODY": "100"})
    assert result.returncode != 0
    assert "CLOUDCTL_SERVER_BODY_TIMEOUT must be above 0" in result.stderr
    assert "CLOUDCTL_SERVER_CONNECTIONS_PER_SOURCE must be 0" in result.stderr
    assert "cloudctl.E003" in result.stderr


URL_PROBE = """
from django.conf import settings
from django.urls import Resolver404, resolve
print(settings.ROOT_URLCONF)
for path in ("/private/v1/credentials", "/private/v1/teams/1/signals/backup/x", "/private/metrics", "/admin/"):
    try:
        resolve(path)
        print(path, "served")
    except Resolver404:
        print(path, "not served")
"""


def test_without_a_urlconf_a_process_serves_only_the_operator_pages(tmp_path):
    """Failing open would put the private API and the metrics on whatever address the process binds (the
    Dockerfile's CMD binds 0.0.0.0): a process must opt into them."""
    result = manage("shell", "--no-imports", "-c", URL_PROBE, env={"CLOUDCTL_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "cloudctl.urls_public",
        "/private/v1/credentials not served",
        "/private/v1/teams/1/signals/backup/x not served",
        "/private/metrics not served",
        "/admin/ served",
    ]


def test_the_dockerfile_serves_the_public_urlconf_and_the_private_api_only_on_the_private_address():
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert "CLOUDCTL_URLCONF" not in cmd and "cloudctl.server" not in cmd  # the default: the operator pages
    fly = (REPO / "fly.toml").read_text()
    private = next(line for line in fly.splitlines() if line.strip().startswith("private ="))
    # The private API faces hostile instances with no proxy in front: its own server, on the private address.
    assert "CLOUDCTL_URLCONF=cloudctl.urls_private python -m cloudctl.server --bind fly-local-6pn:8001" in private
    web = next(line for line in fly.splitlines() if line.strip().startswith("web ="))
    assert "CLOUDCTL_URLCONF=cloudctl.urls_public" in web
