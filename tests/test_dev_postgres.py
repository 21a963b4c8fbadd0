"""`DATABASE_URL=postgres://… make dev`: the embedded stack on PostgreSQL, as the README documents it.

Runs in the PostgreSQL pass only (it needs the session's cluster), on a database of its own there: `manage.py dev`
migrates it, says which database it runs on (never its password), serves, and the command its banner tells a
newcomer to type in another terminal (`manage.py create_team acme`, without DATABASE_URL) reaches that same
database: the team is provisioned by the stack's worker and announced."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings

from .database import database_url
from .ports import free_port

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
                       reason="the embedded stack on PostgreSQL needs the PostgreSQL pass's cluster"),
]


@pytest.fixture
def dev_database(db):
    """A database of its own on the session's cluster (the test database belongs to pytest-django)."""
    name = f"cloudctl_dev_{uuid.uuid4().hex[:8]}"
    admin_url = database_url().rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield database_url().rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def clean_environment(state_dir: Path) -> dict:
    """A newcomer's shell: nothing of the test session's settings, only the state dir a checkout would have."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AWS_", "CLOUDCTL_", "DJANGO_")) and name != "DATABASE_URL"}
    return {**env, "CLOUDCTL_STATE_DIR": str(state_dir), "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"}


def wait_for_output(path: Path, text: str, process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = path.read_text(errors="replace")
        if text in output:
            return output
        if process.poll() is not None:
            pytest.fail(f"manage.py dev exited ({process.returncode}) before printing {text!r}:\n{output[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"manage.py dev did not print {text!r} within {timeout}s:\n{path.read_text(errors='replace')[-3000:]}")


def test_make_dev_runs_on_postgresql_and_its_banners_commands_reach_it(tmp_path, dev_database):
    state_dir = tmp_path / "var"
    port, router_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    env = clean_environment(state_dir)
    with open(log, "w") as output:
        dev = subprocess.Popen(
            [sys.executable, "manage.py", "dev", "--port", str(port), "--router-port", str(router_port)],
            cwd=REPO, env={**env, "DATABASE_URL": dev_database}, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        banner = wait_for_output(log, "Ctrl-C stops everything", dev, timeout=180)
        password = dev_database.split("@")[0].rsplit(":", 1)[1]
        assert "PostgreSQL" in banner and "SQLite" not in banner
        assert password not in banner
        assert httpx.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=10).status_code == 200
        with psycopg.connect(dev_database) as connection:
            applied = connection.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
        assert applied > 0, "dev migrated the database it was given"

        # Another terminal, as the banner says: no DATABASE_URL there.
        created = subprocess.run([sys.executable, "manage.py", "create_team", "acme"], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert created.returncode == 0, created.stderr
        with psycopg.connect(dev_database) as connection:
            assert connection.execute("SELECT count(*) FROM teams_team WHERE slug = 'acme'").fetchone()[0] == 1
        wait_for_output(log, "team acme:", dev, timeout=180)
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
    assert dev.returncode == 0, log.read_text(errors="replace")[-3000:]
    assert "stopped." in log.read_text()
