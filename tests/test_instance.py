"""The team instance (`instance/`): the credential_process helper, and the entrypoint end to end.

The helper tests need only the standard library and a canned HTTP server on 127.0.0.1. The end-to-end
tests run `instance/entrypoint.py` with the instance's own virtualenv (`.venv-instance`) against the
control plane served over real HTTP (`live_server`) and the local SeaweedFS: credentials come from the
private API, Datasette serves the volume, Litestream backs it up under the team's prefix, and a wiped
volume is restored from the backup.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import httpx
import pytest

from cloudctl.local_s3 import REGION

from .instance_sso import member_cookies

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = ROOT / "instance"
HELPER = INSTANCE_DIR / "credential_helper.py"
ENTRYPOINT = INSTANCE_DIR / "entrypoint.py"
INSTANCE_PYTHON = ROOT / ".venv-instance" / "bin" / "python"
LITESTREAM = INSTANCE_PYTHON.parent / "litestream"

sys.path.insert(0, str(INSTANCE_DIR))
import credential_helper  # noqa: E402
import entrypoint  # noqa: E402

SECRET_TOKEN = "team-token-that-must-never-be-printed.abc123"

needs_instance_venv = pytest.mark.skipif(
    not (INSTANCE_PYTHON.exists() and LITESTREAM.exists()),
    reason=f"the instance virtualenv is missing ({INSTANCE_PYTHON}): make instance-venv, or python3 -m venv .venv-instance && "
           ".venv-instance/bin/pip install -r instance/requirements.txt",
)


def wait_for(condition, *, timeout: float, interval: float = 0.3, message: str = "condition"):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as error:  # the thing polled is not ready yet
            last_error = error
        else:
            if result:
                return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}" + (f" (last error: {last_error!r})"
                                                                          if last_error else ""))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- credential_helper: a canned private API -----------------------------------------------------------

class CannedAPI:
    """A tiny HTTP server on 127.0.0.1 answering POSTs from a list of (status, headers, body)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                api.requests.append({"path": self.path, "headers": dict(self.headers)})
                status, headers, body = api.answers.pop(0) if len(api.answers) > 1 else api.answers[0]
                payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def good_answer(expires_in=timedelta(hours=12)):
    expiration = (datetime.now(timezone.utc) + expires_in).replace(microsecond=0)
    return {
        "Version": 1, "AccessKeyId": "ASIAEXAMPLEKEY", "SecretAccessKey": "secret-access-key-value",
        "SessionToken": "session-token-value", "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "S3Folder": "s3://backups/team-7/",
    }, expiration


def run_helper(url, *, token=SECRET_TOKEN, timeout=60, **extra_env):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CLOUDCTL_URL": url, "CLOUDCTL_TOKEN": token,
           **extra_env}
    return subprocess.run([sys.executable, str(HELPER)], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name, txid", [("../data.db", "000000000000002a"), ("data.db", "2a"), ("data.db", "")])
def test_a_restore_machine_with_a_bad_database_or_txid_refuses_to_start(name, txid):
    with pytest.raises(entrypoint.StartupError, match="CLOUDCTL_RESTORE_DATABASE must be"):
        entrypoint.run({"CLOUDCTL_RESTORE_DATABASE": name, "CLOUDCTL_RESTORE_TXID": txid})


def test_helper_prints_only_the_credential_process_json():
    answer, expiration = good_answer()
    with CannedAPI([(200, {}, answer)]) as api:
        result = run_helper(api.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    printed = json.loads(result.stdout)  # nothing but one JSON document on stdout
    assert list(printed) == ["Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"]
    assert printed["Version"] == 1
    assert printed["AccessKeyId"] == answer["AccessKeyId"]
    assert printed["SessionToken"] == answer["SessionToken"]
    # Reported 600 s (the default) before the real expiry, so the SDK renews in time.
    assert credential_helper.parse_expiration(printed["Expiration"]) == expiration - timedelta(seconds=600)
    [request] = api.requests
    assert request["path"] == "/private/v1/credentials"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET_TOKEN}"


def test_helper_renews_for_the_boot_that_started_it():
    """The entrypoint's boot id (CLOUDCTL_BOOT_ID) goes with every renewal; without one, no header at all."""
    answer, _ = good_answer()
    with CannedAPI([(200, {}, answer)]) as api:
        assert run_helper(api.url, CLOUDCTL_BOOT_ID="boot-id-of-this-start-0001").returncode == 0
        assert run_helper(api.url).returncode == 0
    with_boot, without = ({name.lower(): value for name, value in request["headers"].items()}
                          for request in api.requests)
    assert with_boot["x-cloudctl-boot"] == "boot-id-of-this-start-0001"
    assert "x-cloudctl-boot" not in without


def test_helper_early_seconds_is_configurable():
    answer, expiration = good_answer()
    with CannedAPI([(200, {}, answer)]) as api:
        result = run_helper(api.url + "/private/v1/credentials", CLOUDCTL_CREDENTIALS_EARLY_SECONDS="3600")
    assert result.returncode == 0, result.stderr
    reported = credential_helper.parse_expiration(json.loads(result.stdout)["Expiration"])
    assert reported == expiration - timedelta(hours=1)


def test_expiration_is_never_reported_sooner_than_a_minute_nor_after_the_real_expiry():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

    def reported(expires_in):
        answer = dict(good_answer()[0], Expiration=(now + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ"))
        output = credential_helper.credential_process_output(answer, early_seconds=600, now=now)
        return credential_helper.parse_expiration(output["Expiration"]) - now

    assert reported(timedelta(hours=12)) == timedelta(hours=12) - timedelta(seconds=600)
    assert reported(timedelta(minutes=5)) == timedelta(seconds=60)  # floor: now + 60 s
    assert reported(timedelta(seconds=30)) == timedelta(seconds=30)  # never past the real expiry


def test_helper_401_exits_nonzero_with_the_api_error_and_no_token():
    with CannedAPI([(401, {}, {"error": "invalid token"})]) as api:
        result = run_helper(api.url)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "401" in lines[0] and "invalid token" in lines[0]
    assert SECRET_TOKEN not in result.stderr
    assert len(api.requests) == 1  # a rejected token is not retried


def test_helper_retries_503_honouring_retry_after():
    answer, _ = good_answer()
    with CannedAPI([(503, {"Retry-After": "1"}, {"error": "credentials are temporarily unavailable"}),
                    (200, {}, answer)]) as api:
        result = run_helper(api.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["AccessKeyId"] == answer["AccessKeyId"]
    assert len(api.requests) == 2


def test_helper_gives_up_at_once_when_retry_after_is_past_its_deadline():
    with CannedAPI([(429, {"Retry-After": "3600"}, {"error": "too many credential requests for this team"})]) as api:
        result = run_helper(api.url)
    assert result.returncode != 0
    assert "429" in result.stderr and "too many credential requests" in result.stderr
    assert len(api.requests) == 1


def test_helper_does_not_follow_redirects_with_the_token():
    with CannedAPI([(200, {}, good_answer()[0])]) as elsewhere:
        with CannedAPI([(302, {"Location": elsewhere.url + "/steal"}, {})]) as api:
            result = run_helper(api.url)
    assert result.returncode != 0
    assert "302" in result.stderr
    assert elsewhere.requests == []


def test_helper_unreachable_control_plane_fails_within_its_deadline():
    result = run_helper(f"http://127.0.0.1:{free_port()}", CLOUDCTL_CREDENTIALS_DEADLINE="2")
    assert result.returncode != 0
    assert "cannot reach the control plane" in result.stderr
    assert SECRET_TOKEN not in result.stderr


# --- entrypoint: the files it writes --------------------------------------------------------------------

def entrypoint_config(**env):
    return entrypoint.Config.from_env({"CLOUDCTL_URL": "http://cloudctl.internal:8001", "CLOUDCTL_TOKEN": "t",
                                       "DATA_DIR": "/data", **env})


def test_litestream_config_never_holds_keys_and_names_the_endpoint_only_when_set():
    folder = entrypoint.Folder.parse("s3://backups/team-42/")
    assert (folder.bucket, folder.prefix) == ("backups", "team-42/")
    on_aws = entrypoint.litestream_config(entrypoint_config(), folder, ["data.db"], Path("/run/ls.sock"))
    [db] = on_aws["dbs"]
    assert db == {"path": "/data/data.db", "replica": {
        "type": "s3", "bucket": "backups", "path": "team-42/data.db", "region": "us-east-1", "sync-interval": "1s"}}
    local = entrypoint.litestream_config(entrypoint_config(CLOUDCTL_S3_ENDPOINT="http://127.0.0.1:8333"), folder,
                                         ["a.db", "b.db"], Path("/run/ls.sock"))
    assert [db["replica"]["path"] for db in local["dbs"]] == ["team-42/a.db", "team-42/b.db"]
    assert local["dbs"][0]["replica"]["endpoint"] == "http://127.0.0.1:8333"
    assert local["dbs"][0]["replica"]["force-path-style"] is True
    text = json.dumps([on_aws, local])
    assert "access-key-id" not in text and "secret-access-key" not in text


SIGNALS = {"heartbeat_url": "http://cloudctl.internal:8001/private/v1/teams/42/signals/backup/v.sig",
           "heartbeat_interval": "2m",
           "shutdown_url": "http://cloudctl.internal:8001/private/v1/teams/42/signals/shutdown/v.sig"}


def test_signal_settings_keep_only_well_formed_entries():
    assert entrypoint.signal_settings({"Signals": SIGNALS}) == SIGNALS
    assert entrypoint.signal_settings({}) == {}
    assert entrypoint.signal_settings({"Signals": "nope"}) == {}
    odd = {"heartbeat_url": "file:///etc/passwd", "heartbeat_interval": "soon", "shutdown_url": 7}
    assert entrypoint.signal_settings({"Signals": odd}) == {}
    assert entrypoint.signal_settings({"Signals": {**SIGNALS, "heartbeat_interval": "soon"}}) == {
        "heartbeat_url": SIGNALS["heartbeat_url"], "shutdown_url": SIGNALS["shutdown_url"]}


def test_litestream_pings_the_heartbeat_url_when_given():
    folder = entrypoint.Folder.parse("s3://backups/team-42/")
    config = entrypoint.litestream_config(entrypoint_config(), folder, ["data.db"], Path("/run/ls.sock"), SIGNALS)
    assert (config["heartbeat-url"], config["heartbeat-interval"]) == (SIGNALS["heartbeat_url"], "2m")
    assert "heartbeat-url" not in entrypoint.litestream_config(entrypoint_config(), folder, ["data.db"],
                                                               Path("/run/ls.sock"), {})


def test_litestream_keeps_the_fleets_backup_retention():
    folder = entrypoint.Folder.parse("s3://backups/team-42/")
    config = entrypoint.litestream_config(entrypoint_config(CLOUDCTL_BACKUP_RETENTION="168h"), folder, ["data.db"],
                                          Path("/run/ls.sock"))
    assert config["snapshot"] == {"retention": "168h"}
    # An instance started by a control plane that sends none keeps Litestream's own default.
    assert "snapshot" not in entrypoint.litestream_config(entrypoint_config(), folder, ["data.db"], Path("/run/ls.sock"))
    with pytest.raises(entrypoint.StartupError, match="CLOUDCTL_BACKUP_RETENTION"):
        entrypoint_config(CLOUDCTL_BACKUP_RETENTION="7d")  # Litestream takes no days


def test_scale_to_zero_reports_its_shutdown_through_an_environment_variable():
    config = entrypoint_config(CLOUDCTL_MAX_AGE="11h", CLOUDCTL_IDLE_TIMEOUT="15m")
    plugin = entrypoint.datasette_config(config, config.max_age, report_shutdown=True, started_at=1000.0)[
        "plugins"]["datasette-scale-to-zero"]
    assert plugin["shutdown_url"] == {"$env": "CLOUDCTL_SHUTDOWN_URL"}  # the URL itself is never in the file
    assert plugin["shutdown_method"] == "POST"
    assert json.loads(plugin["shutdown_body"]) == {"started_at": 1000.0, "max_age": 39600, "idle_timeout": 900}
    never = entrypoint_config(CLOUDCTL_MAX_AGE="", CLOUDCTL_IDLE_TIMEOUT="")
    assert "plugins" not in entrypoint.datasette_config(never, never.max_age, report_shutdown=True)


def test_aws_profile_runs_the_helper_with_the_same_interpreter():
    profile = entrypoint.aws_profile("/usr/local/bin/python")
    assert profile.splitlines() == [
        "[profile cloudctl]", f"credential_process = /usr/local/bin/python {INSTANCE_DIR / 'credential_helper.py'}"]


def test_datasette_config_scale_to_zero_and_no_permission_for_everyone():
    config = entrypoint_config(CLOUDCTL_MAX_AGE="11h", CLOUDCTL_IDLE_TIMEOUT="15m")
    document = entrypoint.datasette_config(config, config.max_age)
    assert document["plugins"]["datasette-scale-to-zero"] == {"max_age": "39600s", "duration": "900s"}
    # Writes are the team's roles' (plugins/team_auth.py), never granted to every actor.
    assert "permissions" not in document
    never = entrypoint_config(CLOUDCTL_MAX_AGE="", CLOUDCTL_IDLE_TIMEOUT="")
    assert "plugins" not in entrypoint.datasette_config(never, never.max_age)


def test_datasette_loads_the_instance_plugins_always_and_the_teams_after_them(tmp_path):
    config = entrypoint_config(DATA_DIR=str(tmp_path / "data"))
    runtime = tmp_path / "data" / ".cloudctl"
    runtime.mkdir(parents=True)
    assert entrypoint.plugins_dir(runtime, config.data_dir) == INSTANCE_DIR / "plugins"
    command = entrypoint.datasette_command(config, ["data.db"], runtime / "datasette.yaml", INSTANCE_DIR / "plugins")
    assert command[command.index("--plugins-dir") + 1] == str(INSTANCE_DIR / "plugins")
    # Only the team's roles allow anything (plugins/team_auth.py): no default allow for its rules to outweigh.
    assert "--default-deny" in command

    customer = config.data_dir / "plugins"
    customer.mkdir()
    (customer / "recorder.py").write_text("# the team's own\n")
    (customer / "team_auth.py").write_text("# would replace the instance's gate\n")
    combined = entrypoint.plugins_dir(runtime, config.data_dir)
    assert combined == runtime / "plugins"
    loaded = {path.name: path.resolve() for path in combined.glob("*.py")}
    assert loaded == {"team_auth.py": INSTANCE_DIR / "plugins" / "team_auth.py",
                      "router_guard.py": INSTANCE_DIR / "plugins" / "router_guard.py",
                      "recorder.py": (customer / "recorder.py").resolve()}
    (customer / "recorder.py").unlink()
    assert {path.name for path in entrypoint.plugins_dir(runtime, config.data_dir).glob("*.py")} == {
        "team_auth.py", "router_guard.py"}


def test_control_socket_path_fits_a_unix_socket_address_and_is_stable(tmp_path):
    if len(os.fsencode(tmp_path / "litestream.sock")) < 100:
        assert entrypoint.control_socket_path(tmp_path) == tmp_path / "litestream.sock"
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    path = entrypoint.control_socket_path(deep)
    assert len(os.fsencode(path)) < 108
    assert path == entrypoint.control_socket_path(deep)  # the same directory on every start, not a new one
    assert path.parent.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("value", ["11", "1d", "-1h", "0s", "h"])
def test_bad_durations_are_refused(value):
    with pytest.raises(entrypoint.StartupError):
        entrypoint_config(CLOUDCTL_IDLE_TIMEOUT=value)


def test_aws_ca_bundle_never_reaches_litestream_but_becomes_ssl_cert_file_for_https():
    environ = {"AWS_CA_BUNDLE": "/etc/ssl/bundle.pem"}
    http = entrypoint_config(CLOUDCTL_S3_ENDPOINT="http://127.0.0.1:8333")
    https = entrypoint_config(CLOUDCTL_S3_ENDPOINT="https://s3.example")
    assert entrypoint.tls_environ(http, environ) == {}
    assert entrypoint.tls_environ(https, environ) == {"SSL_CERT_FILE": "/etc/ssl/bundle.pem"}
    assert entrypoint.tls_environ(entrypoint_config(), environ) == {"SSL_CERT_FILE": "/etc/ssl/bundle.pem"}
    assert "AWS_CA_BUNDLE" not in entrypoint.clean_environ(dict(environ, PATH="/bin"))


# --- the instance, end to end ---------------------------------------------------------------------------

def admin_client(s3_config):
    return boto3.client(
        "s3", endpoint_url=s3_config.endpoint_url, region_name=REGION,
        aws_access_key_id=s3_config.admin_access_key, aws_secret_access_key=s3_config.admin_secret_key,
    )


def keys_under(s3, bucket, prefix):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def wipe_prefix(s3, bucket, prefix):
    """Team ids are reused between tests; start every team with an empty backup prefix."""
    for key in keys_under(s3, bucket, prefix):
        s3.delete_object(Bucket=bucket, Key=key)


class Instance:
    """entrypoint.py as a subprocess in its own process group, stopped like the local backend does."""

    def __init__(self, *, url, token, team_id: int, data_dir: Path, s3_config, log_path: Path):
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.process = None
        self.env = {
            "PATH": f"{INSTANCE_PYTHON.parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(log_path.parent),
            "CLOUDCTL_URL": url,
            "CLOUDCTL_TOKEN": token,
            "DATA_DIR": str(data_dir),
            "PORT": str(self.port),
            "CLOUDCTL_BIND": "127.0.0.1",
            "CLOUDCTL_S3_ENDPOINT": s3_config.endpoint_url,
            "CLOUDCTL_S3_REGION": REGION,
            "CLOUDCTL_MAX_AGE": "11h",
            "CLOUDCTL_IDLE_TIMEOUT": "",
            "CLOUDCTL_STARTUP_TIMEOUT": "60",
            # Single sign-on (plugins/team_auth.py): the authorize URL is never followed by these tests.
            "CLOUDCTL_TEAM_ID": str(team_id),
            "CLOUDCTL_TEAM_URL": self.url,
            "CLOUDCTL_SSO_AUTHORIZE_URL": "http://127.0.0.1:9/sso/authorize",
            # What a careless host might export: the instance must use none of it.
            "AWS_ACCESS_KEY_ID": "not-a-real-access-key-id",
            "AWS_SECRET_ACCESS_KEY": "wrong-secret",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_PROFILE": "nonexistent",
            "AWS_CA_BUNDLE": str(log_path.parent / "no-such-bundle.pem"),
        }

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(INSTANCE_PYTHON), str(ENTRYPOINT)], env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout=120):
        def answers():
            if self.process.poll() is not None:
                pytest.fail(f"the instance exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            return httpx.get(self.url + "-/versions.json", timeout=2).status_code == 200  # the health check

        wait_for(answers, timeout=timeout, message=f"HTTP 200 from {self.url}")
        return self

    def stop(self, timeout=30) -> int | None:
        """SIGTERM to the whole group (as the local backend and Fly do), SIGKILL if it lingers."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        code = self.process.poll()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers in the group, if any
        except ProcessLookupError:
            pass
        if code is None:
            code = self.process.wait(timeout=10)
        return code


@pytest.fixture
def instance_setup(s3_env, live_server, make_team, tmp_path):
    """A team with an empty backup prefix, a second team whose prefix must stay untouched, and a
    factory for instance processes that are always killed at the end."""
    from teams.tokens import team_token

    team, other = make_team(), make_team()
    admin = admin_client(s3_env)
    for each in (team, other):
        wipe_prefix(admin, s3_env.bucket, each.storage_prefix)
    started = []

    def make(data_dir=None, name="instance", control_plane=None):
        instance = Instance(url=control_plane or live_server.url, token=team_token(team), team_id=team.pk,
                            data_dir=data_dir or tmp_path / "data",
                            s3_config=s3_env, log_path=tmp_path / f"{name}-{len(started)}.log")
        started.append(instance)
        return instance

    yield {"team": team, "other": other, "admin": admin, "s3": s3_env, "make": make, "tmp": tmp_path,
           "live_server": live_server}
    for instance in started:
        instance.stop(timeout=15)


def restored_copy(s3_config, team, name, out: Path) -> Path:
    """Restore `<prefix><name>` with the admin keys into `out` (what the backup really holds)."""
    config = out.parent / f"{out.name}.litestream.yml"
    config.write_text(json.dumps({"dbs": [{"path": str(out.parent / f"{out.name}.source"), "replica": {
        "type": "s3", "bucket": s3_config.bucket, "path": f"{team.storage_prefix}{name}",
        "endpoint": s3_config.endpoint_url, "region": REGION, "force-path-style": True}}]}))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{out}{suffix}").unlink(missing_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(out.parent), "AWS_ACCESS_KEY_ID": s3_config.admin_access_key,
           "AWS_SECRET_ACCESS_KEY": s3_config.admin_secret_key, "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run(
        [str(LITESTREAM), "restore", "-config", str(config), "-o", str(out), str(out.parent / f"{out.name}.source")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return out


def count_rows(path: Path, table: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"select count(*) from {table}").fetchone()[0]
    finally:
        connection.close()


def insert_rows(path: Path, table: str, values):
    connection = sqlite3.connect(path, timeout=30)
    try:
        # The instance keeps every database in WAL mode; a database made here before it starts needs it too.
        assert connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        with connection:
            connection.execute(f"create table if not exists {table} (id integer primary key, value text)")
            connection.executemany(f"insert into {table} (value) values (?)", [(value,) for value in values])
    finally:
        connection.close()


@needs_instance_venv
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_instance_serves_and_backs_up_only_under_its_team_prefix(instance_setup, forwarding_sso):
    setup = instance_setup
    team, other, admin, s3_config = setup["team"], setup["other"], setup["admin"], setup["s3"]
    instance = setup["make"](control_plane=forwarding_sso.url).start().wait_ready()
    data_db = instance.data_dir / "data.db"
    assert data_db.exists(), instance.log()

    insert_rows(data_db, "readings", [f"reading {n}" for n in range(50)])

    def backup_has_rows():
        copy = restored_copy(s3_config, team, "data.db", setup["tmp"] / "check.db")
        return count_rows(copy, "readings") == 50

    wait_for(backup_has_rows, timeout=60, interval=1, message="the 50 rows in the backup")
    keys = keys_under(admin, s3_config.bucket, team.storage_prefix)
    assert keys and all(key.startswith(f"{team.storage_prefix}data.db/") for key in keys), keys
    assert keys_under(admin, s3_config.bucket, other.storage_prefix) == []

    # A signed-in owner of the team uploads a CSV and edits the schema (plugins/team_auth.py).
    cookies = member_cookies(forwarding_sso, instance.data_dir, role="owner")
    page = httpx.get(instance.url + "-/upload-csvs", timeout=10, cookies=cookies)
    assert page.status_code == 200
    response = httpx.post(instance.url + "-/upload-csvs", timeout=10, data={"xhr": "1", "table": "people"},
                          files={"csv": ("people.csv", b"name,age\nAda,36\nGrace,45\n", "text/csv")},
                          cookies=cookies)
    assert response.status_code == 200, response.text
    wait_for(lambda: count_rows(data_db, "people") == 2, timeout=30, message="the uploaded CSV's rows")
    assert httpx.get(instance.url + "-/edit-schema/data/people", timeout=10, cookies=cookies).status_code == 200
    wait_for(lambda: count_rows(restored_copy(s3_config, team, "data.db", setup["tmp"] / "check.db"), "people") == 2,
             timeout=60, interval=1, message="the uploaded CSV in the backup")

    log = instance.log()
    assert "replicating 1 database" in log and f"serving Datasette on http://127.0.0.1:{instance.port}/" in log
    assert instance.env["CLOUDCTL_TOKEN"] not in log


@needs_instance_venv
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_wiped_volume_is_restored_with_every_committed_row(instance_setup):
    setup = instance_setup
    data_dir = setup["tmp"] / "volume"
    data_dir.mkdir()
    # A database the team brought along: replicated and restored like data.db.
    insert_rows(data_dir / "notes.db", "notes", ["first note"])

    first = setup["make"](data_dir, "first").start().wait_ready()
    assert sorted(path.name for path in data_dir.glob("*.db")) == ["notes.db"]  # no data.db: one exists

    def write_stop_wipe_restart(instance, rows, name):
        """Rows committed right before the stop must reach the backup through Litestream's final sync."""
        insert_rows(data_dir / "notes.db", "notes", rows)
        assert instance.stop() in (0, 143), instance.log()
        shutil.rmtree(data_dir)
        return setup["make"](data_dir, name).start().wait_ready()

    second = write_stop_wipe_restart(first, [f"note {n}" for n in range(99)], "second")
    assert "restoring notes.db" in second.log()
    assert count_rows(data_dir / "notes.db", "notes") == 100
    # Replication resumes after a restore: new rows survive the next wipe too.
    third = write_stop_wipe_restart(second, [f"later note {n}" for n in range(20)], "third")
    assert count_rows(data_dir / "notes.db", "notes") == 120
    assert third.stop() in (0, 143), third.log()


@needs_instance_venv
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_cleanly_after_the_final_sync(instance_setup, stop_signal):
    """SIGINT (Fly's default stop signal) as SIGTERM: sent to the process Fly signals, the entrypoint's, which has
    exec'd into `litestream replicate`. Litestream passes it to Datasette; both end with exit 0 and every row
    committed right before the stop in the backup (Litestream's final sync)."""
    setup = instance_setup
    instance = setup["make"]().start().wait_ready()
    rows = [f"row {n}" for n in range(500)]
    insert_rows(instance.data_dir / "data.db", "readings", rows)
    os.kill(instance.process.pid, stop_signal)
    try:
        code = instance.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the instance did not stop on {stop_signal.name}:\n{instance.log()[-4000:]}")
    assert code == 0, instance.log()[-4000:]
    assert "litestream shut down" in instance.log()
    copy = restored_copy(setup["s3"], setup["team"], "data.db", setup["tmp"] / "check.db")
    assert count_rows(copy, "readings") == len(rows)


@needs_instance_venv
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_existing_local_database_is_never_overwritten(instance_setup):
    setup = instance_setup
    data_dir = setup["tmp"] / "volume"
    data_dir.mkdir()
    insert_rows(data_dir / "data.db", "items", ["backed up"])
    first = setup["make"](data_dir, "first").start().wait_ready()
    assert first.stop() in (0, 143), first.log()

    # The local file differs from the backup: the instance keeps it and replicates it.
    (data_dir / "data.db").unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{data_dir / 'data.db'}{suffix}").unlink(missing_ok=True)
    insert_rows(data_dir / "data.db", "items", ["local 1", "local 2"])
    second = setup["make"](data_dir, "second").start().wait_ready()
    assert "restoring data.db" not in second.log()
    assert count_rows(data_dir / "data.db", "items") == 2


@needs_instance_venv
@pytest.mark.django_db(transaction=True)
def test_a_rejected_token_fails_at_once_without_printing_it(instance_setup, live_server):
    setup = instance_setup
    instance = setup["make"]()
    instance.env["CLOUDCTL_TOKEN"] = SECRET_TOKEN
    instance.start()
    code = instance.process.wait(timeout=60)
    assert code != 0
    log = instance.log()
    assert "401" in log and "FAILED" in log
    assert SECRET_TOKEN not in log
    assert not (instance.data_dir / "data.db").exists()


@needs_instance_venv
def test_an_unreachable_control_plane_fails_after_the_startup_timeout(tmp_path):
    log_path = tmp_path / "instance.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(INSTANCE_PYTHON), str(ENTRYPOINT)], stdout=log, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "CLOUDCTL_URL": f"http://127.0.0.1:{free_port()}",
                 "CLOUDCTL_TOKEN": SECRET_TOKEN, "DATA_DIR": str(tmp_path / "data"),
                 "CLOUDCTL_STARTUP_TIMEOUT": "3"},
            start_new_session=True,
        )
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert code != 0
    text = log_path.read_text()
    assert "cannot reach the control plane" in text and "FAILED" in text
    assert SECRET_TOKEN not in text


@needs_instance_venv
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_idle_timeout_stops_the_instance_cleanly_after_a_final_sync(instance_setup):
    setup = instance_setup
    instance = setup["make"]()
    instance.env["CLOUDCTL_IDLE_TIMEOUT"] = "3s"
    instance.start().wait_ready()
    insert_rows(instance.data_dir / "data.db", "readings", ["last words"])
    # datasette-scale-to-zero exits 0 once idle; Litestream then syncs and exits 0 (a clean stop to Fly
    # and to the local backend).
    code = wait_for(lambda: instance.process.poll() is not None and (instance.process.returncode,), timeout=60,
                    message="the idle instance to exit")[0]
    assert code == 0, instance.log()
    assert "litestream shut down" in instance.log()
    copy = restored_copy(setup["s3"], setup["team"], "data.db", setup["tmp"] / "check.db")
    assert count_rows(copy, "readings") == 1


@needs_instance_venv
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_litestream_renews_its_credentials_through_the_helper(instance_setup, forwarding_sso):
    """Expiration reported 60 s ahead (the floor) makes the SDK run credential_process again."""
    from credentials.models import CredentialEvent

    from instances.models import Instance as InstanceRow

    setup = instance_setup
    team = setup["team"]
    row = InstanceRow.objects.create(team=team, backend="x", state=InstanceRow.State.RUNNING)
    instance = setup["make"](control_plane=forwarding_sso.url)
    instance.env["CLOUDCTL_CREDENTIALS_EARLY_SECONDS"] = "43200"
    instance.start().wait_ready()
    row.refresh_from_db()
    boot = row.boot_id
    assert boot, "the entrypoint's exchange names its boot"

    def helper_issuances():
        return CredentialEvent.objects.filter(
            team=team, kind=CredentialEvent.Kind.ISSUED,
            user_agent__startswith=credential_helper.USER_AGENT.split("/")[0]).count()

    assert helper_issuances() == 1
    written = []

    def renewed():
        written.append(f"row {len(written)}")
        insert_rows(instance.data_dir / "data.db", "ticks", [written[-1]])  # gives Litestream S3 work
        return helper_issuances() >= 2

    wait_for(renewed, timeout=150, interval=3, message="a second credential_process call")
    row.refresh_from_db()
    assert row.boot_id == boot  # a renewal belongs to the boot that started Litestream
    insert_rows(instance.data_dir / "data.db", "ticks", ["after renewal"])
    written.append("after renewal")
    wait_for(lambda: count_rows(restored_copy(setup["s3"], team, "data.db", setup["tmp"] / "check.db"), "ticks")
             == len(written), timeout=60, interval=1, message="rows written after the renewal in the backup")
    assert "sync error" not in instance.log()

    # No restart: the same process served throughout the renewal.
    assert instance.process.poll() is None
    pid = instance.process.pid

    # A revoked token: the next renewal is refused, visibly (audit row, the helper's error in the log), and
    # the instance keeps serving reads.
    from teams.tokens import rotate_team_token

    # (signal="": the credential exchange's refusals, not those of the backup heartbeat, revoked too.)
    refused_renewals = CredentialEvent.objects.filter(team=team, reason=CredentialEvent.Reason.REVOKED, signal="")
    refused_before = refused_renewals.count()
    rotate_team_token(team)
    wait_for(lambda: refused_renewals.count() > refused_before, timeout=150, interval=3,
             message="a refused renewal after the rotation")
    wait_for(lambda: "invalid token" in instance.log(), timeout=30, interval=1,
             message="the refused renewal in the instance log")
    assert instance.process.poll() is None and instance.process.pid == pid
    cookies = member_cookies(forwarding_sso, instance.data_dir, role="viewer")
    assert httpx.get(f"{instance.url}data/ticks.json?_shape=array", timeout=5, cookies=cookies).status_code == 200


@pytest.mark.django_db
def test_the_entrypoint_lists_its_own_replicas_and_is_refused_another_teams(s3_env, make_team):
    from credentials.broker import assume_team_role

    own, other = make_team(), make_team()
    admin = admin_client(s3_env)
    for team in (own, other):
        wipe_prefix(admin, s3_env.bucket, team.storage_prefix)
        admin.put_object(Bucket=s3_env.bucket, Key=f"{team.storage_prefix}notes.db/ltx/0/x.ltx", Body=b"x")
    admin.put_object(Bucket=s3_env.bucket, Key=f"{own.storage_prefix}stray.txt", Body=b"x")
    issued = assume_team_role(own)
    answer = {"AccessKeyId": issued.access_key_id, "SecretAccessKey": issued.secret_access_key,
              "SessionToken": issued.session_token}
    config = entrypoint.Config.from_env({"CLOUDCTL_URL": "http://cloudctl.internal:8001", "CLOUDCTL_TOKEN": "t",
                                         "CLOUDCTL_S3_ENDPOINT": s3_env.endpoint_url, "CLOUDCTL_S3_REGION": REGION})

    assert entrypoint.replicated_databases(config, answer, entrypoint.Folder(s3_env.bucket, own.storage_prefix)) \
        == {"notes.db"}
    with pytest.raises(entrypoint.StartupError, match=f"cannot list backups at .*{other.storage_prefix}: AccessDenied"):
        entrypoint.replicated_databases(config, answer, entrypoint.Folder(s3_env.bucket, other.storage_prefix))


def test_a_volume_holding_all_it_replicated_needs_no_listing(tmp_path):
    """A wake or restart of a volume that kept every database it replicated skips the replica listing; a new,
    wiped or damaged volume, or another folder, lists (and restores what is missing)."""
    data_dir, runtime = tmp_path / "data", tmp_path / "data" / entrypoint.RUNTIME_DIR_NAME
    runtime.mkdir(parents=True)
    folder = entrypoint.Folder("backups", "team-7/")
    assert entrypoint.volume_replicas(runtime, data_dir) is None  # never started here
    for name in ("data.db", "notes.db"):
        sqlite3.connect(data_dir / name).close()
    entrypoint.record_replicated(runtime, folder, ["data.db", "notes.db"])
    assert (runtime / entrypoint.REPLICATED_RECORD).stat().st_mode & 0o777 == 0o600
    assert entrypoint.volume_replicas(runtime, data_dir) == ("s3://backups/team-7/", {"data.db", "notes.db"})
    (data_dir / "notes.db").unlink()  # lost: its replica must be listed and restored
    assert entrypoint.volume_replicas(runtime, data_dir) is None
    for broken in ("", "{", '{"folder": "s3://backups/team-7/"}', '{"folder": 7, "databases": ["data.db"]}',
                   '{"folder": "s3://backups/team-7/", "databases": []}', "[]"):
        (runtime / entrypoint.REPLICATED_RECORD).write_text(broken)
        assert entrypoint.volume_replicas(runtime, data_dir) is None


@needs_instance_venv
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_restore_machine_restores_its_txid_then_serves_only_a_guarded_preview(instance_setup):
    """The Fly backend's restore Machine: the instance's program in restore mode on a new volume."""
    from backups.replicas import replica_window

    setup, team = instance_setup, instance_setup["team"]
    live_volume, restore_volume = setup["tmp"] / "live", setup["tmp"] / "restored"
    live_volume.mkdir()
    insert_rows(live_volume / "notes.db", "notes", [f"note {n}" for n in range(10)])
    live = setup["make"](live_volume, "live").start().wait_ready()
    wait_for(lambda: count_rows(restored_copy(setup["s3"], team, "notes.db", setup["tmp"] / "copy.db"), "notes") == 10,
             timeout=60, interval=0.5, message="the first ten rows in the backup")
    first_point = replica_window(team, "notes.db", actor="test").newest.txid_hex
    insert_rows(live_volume / "notes.db", "notes", [f"later {n}" for n in range(5)])
    assert live.stop() in (0, 143), live.log()
    assert count_rows(restored_copy(setup["s3"], team, "notes.db", setup["tmp"] / "copy.db"), "notes") == 15
    objects_before = keys_under(setup["admin"], setup["s3"].bucket, team.storage_prefix)

    machine = setup["make"](restore_volume, "restore")
    machine.env.update({"CLOUDCTL_RESTORE_DATABASE": "notes.db", "CLOUDCTL_RESTORE_TXID": first_point})
    machine.start().wait_ready()  # the health check answers without the secret
    assert count_rows(restore_volume / "notes.db", "notes") == 10
    assert httpx.get(f"{machine.url}notes/notes.json", timeout=5).status_code == 403
    assert machine.stop() in (0, 143, -15), machine.log()
    # The control plane sets the preview secret: the restore is not run again, the preview answers with it only.
    machine.env["CLOUDCTL_PREVIEW_SECRET"] = "preview-secret-of-the-test"
    machine.start().wait_ready()
    assert httpx.get(f"{machine.url}notes/notes.json", timeout=5).status_code == 403
    page = httpx.get(f"{machine.url}notes/notes.json", headers={"X-Cloudctl-Preview": "preview-secret-of-the-test"},
                     timeout=5)
    assert page.status_code == 200 and len(page.json()["rows"]) == 10
    log = machine.log()
    assert log.count(f"restoring notes.db at txid {first_point}") == 1
    assert "preview-secret-of-the-test" not in log and machine.env["CLOUDCTL_TOKEN"] not in log
    # Nothing was replicated from the restore Machine: the team's replica is as the live instance left it.
    assert keys_under(setup["admin"], setup["s3"].bucket, team.storage_prefix) == objects_before
