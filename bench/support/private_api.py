"""What the private-API benches share: a throwaway state dir and the local STS, teams with their tokens, and
the private API served as fly.toml's `private` process runs it. Not a bench: `make bench` runs the scripts
directly in bench/."""

import http.client
import json
import os
import resource
import secrets
import subprocess
import sys
import time
from pathlib import Path

from cloudctl.local_s3 import port_is_free
from cloudctl.processes import stop_process_group

REPO = Path(__file__).resolve().parents[2]
PATH = "/private/v1/credentials"


def log(message: str) -> None:
    print(message, flush=True)


def clean_environ() -> dict[str, str]:
    """This machine's environment without anything that could point boto3 or Django elsewhere."""
    dropped_prefixes = ("AWS_", "CLOUDCTL_", "DJANGO_")
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(dropped_prefixes) and key != "DATABASE_URL"}
    environ.update({
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    })
    return environ


def free_port() -> int:
    for _ in range(200):
        candidate = secrets.randbelow(20000) + 20000
        if port_is_free(candidate):
            return candidate
    raise RuntimeError("no free port for the server")


def run_manage(args: list[str], env: dict[str, str], *, input_code: str | None = None) -> None:
    command = [sys.executable, "manage.py", *args]
    if input_code is not None:
        command += ["-c", input_code]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


CREATE_TEAMS = """
import json
from django.utils import timezone
from instances.models import Instance
from teams.models import Team
from teams.tokens import team_token
total = {total}
Team.objects.bulk_create([Team(slug=f"bench-{{i:05d}}", name=f"bench {{i}}") for i in range(1, total + 1)],
                         batch_size=500)
teams = Team.objects.filter(slug__startswith="bench-").order_by("id")
Instance.objects.bulk_create([Instance(team=team, backend="instances.backends.local.LocalBackend", state="running",
                                       backups_expected_since=timezone.now()) for team in teams], batch_size=500)
with open({out!r}, "w") as out:
    json.dump([[team.pk, team_token(team)] for team in teams], out)
"""


def create_teams(total: int, env: dict[str, str], work: Path) -> list[tuple[int, str]]:
    out = work / "teams.json"
    run_manage(["shell"], env, input_code=CREATE_TEAMS.format(total=total, out=str(out)))
    teams = [(pk, token) for pk, token in json.loads(out.read_text())]
    if len(teams) != total:
        raise RuntimeError(f"created {len(teams)} teams, wanted {total}")
    return teams


class PrivateServer:
    """`python -m cloudctl.server`, as fly.toml's `private` process group runs it (bound to 127.0.0.1 here), or
    with `gunicorn=True` the gunicorn gthread server it replaced (for comparison)."""

    def __init__(self, env: dict[str, str], work: Path, *, workers: int = 2, threads: int = 8,
                 gunicorn: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "server.log"
        bind = f"127.0.0.1:{self.port}"
        # A burst opens every connection at once: room for all of them in the listen queue.
        if gunicorn:
            command = [sys.executable, "-m", "gunicorn", "cloudctl.wsgi", "--bind", bind, "--worker-class", "gthread",
                       "--workers", str(workers), "--threads", str(threads), "--backlog", "4096",
                       "--worker-connections", "2000", "--keep-alive", "30", "--no-control-socket"]
        else:
            command = [sys.executable, "-m", "cloudctl.server", "--bind", bind, "--workers", str(workers),
                       "--backlog", "4096"]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(command, cwd=REPO, env={**env, "CLOUDCTL_SERVER_THREADS": str(threads)},
                                            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.tail()}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                # A GET is refused with 405 (and audited): enough to know Django answers.
                connection.request("GET", PATH)
                if connection.getresponse().status == 405:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.2)
        raise RuntimeError(f"the server not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join([line for line in text if "credentials issued" not in line][-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process_group(self.process)


def raise_open_files_limit() -> None:
    """1,000 simultaneous connections need more than the common soft limit of 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def private_api_environ(config, work: Path) -> dict[str, str]:
    """The private process's environment: the local STS, a fresh SQLite state dir (migrated), fresh keys."""
    env = clean_environ()
    env.update(config.client_environ())
    state = work / "state"
    (state / "static").mkdir(parents=True)
    env.update({
        "DJANGO_SETTINGS_MODULE": "cloudctl.settings",
        "CLOUDCTL_STATE_DIR": str(state),
        "CLOUDCTL_TOKEN_KEYS": secrets.token_urlsafe(50),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "CLOUDCTL_URLCONF": "cloudctl.urls_private",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    })
    run_manage(["migrate", "--verbosity", "0"], env)
    return env
