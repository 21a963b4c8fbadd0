"""A throwaway PostgreSQL cluster for one test session (`CLOUDCTL_TEST_DATABASE=postgres`, see the README's tests).

Debian's server (`/usr/lib/postgresql/<version>/bin`, installed by `make test`), a fresh cluster under a temp dir,
listening on 127.0.0.1 only, on a free port, with a random password. It is stopped when the session ends, whatever
ends it: at exit (a failure, Ctrl-C, SIGTERM), and by the kernel when the test process dies without running its exit hooks
(SIGKILL): the server is started with a parent-death signal.

initdb and postgres refuse to run as root, so as root (CI) the cluster belongs to Debian's `postgres` user, under
its home directory (root's temp dir may be closed to other users).
"""

import atexit
import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from tests.ports import free_port

# A child of a session that already started the cluster gets its URL and starts none of its own.
URL_VARIABLE = "CLOUDCTL_TEST_POSTGRES_URL"
PR_SET_PDEATHSIG = 1
READY_TIMEOUT = 60
STOP_TIMEOUT = 30
# The concurrency test alone runs 4 workers, 2 web processes with their threads and the test itself.
MAX_CONNECTIONS = 300


def server_binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda path: int(path.split("/")[4]))
    if not found:
        raise RuntimeError("no PostgreSQL server in /usr/lib/postgresql/*/bin: `make test` installs Debian's "
                           "postgresql package (or run `apt-get install postgresql`)")
    return Path(found[-1]).parent


def server_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: this user, or `postgres` when this is root."""
    return pwd.getpwnam("postgres") if os.geteuid() == 0 else None


def die_with_parent() -> None:
    """Runs in the server's process before exec: the kernel sends it SIGQUIT (immediate shutdown) when the test
    process dies, however it dies. Python runs this after switching to the server's user (which would clear it)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


class Cluster:
    def __init__(self):
        self.binaries = server_binaries()
        self.user = server_user()
        self.directory = Path(tempfile.mkdtemp(prefix="cloudctl-test-postgres-",
                                               dir=self.user.pw_dir if self.user else None))
        self.password = secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None
        self.port = 0

    def _as_server_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def initdb(self) -> None:
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        password_file = self.directory / "password"
        password_file.write_text(self.password)
        password_file.chmod(0o600)
        if self.user is not None:
            os.chown(password_file, self.user.pw_uid, self.user.pw_gid)
        subprocess.run([self.binaries / "initdb", "--pgdata", self.directory / "data", "--username", "postgres",
                        "--pwfile", password_file, "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C",
                        "--no-sync"], check=True, capture_output=True, cwd=self.directory, **self._as_server_user())
        password_file.unlink()

    def start(self) -> str:
        atexit.register(self.stop)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # Python's default for SIGTERM ends the process without its exit hooks.
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        self.initdb()
        self.port = free_port()
        log = open(self.directory / "server.log", "ab")
        # Durability is not what the suite tests: no fsync makes migrations and flushes several times faster.
        self.process = subprocess.Popen(
            [self.binaries / "postgres", "-D", self.directory / "data", "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.directory}",
             "-c", f"max_connections={MAX_CONNECTIONS}", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, start_new_session=True,
            preexec_fn=die_with_parent, **self._as_server_user())
        self.wait_ready()
        return f"postgres://postgres:{self.password}@127.0.0.1:{self.port}/cloudctl"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.password,
                                dbname="postgres", connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "server.log").read_text(errors="replace")
                    raise RuntimeError(f"the test PostgreSQL did not start:\n{log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends the sessions, no checkpoint wait
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def cluster_url() -> str:
    """The URL of this session's cluster (its database `cloudctl`; pytest-django makes `test_cloudctl` on it),
    started on the first call."""
    if URL_VARIABLE not in os.environ:
        os.environ[URL_VARIABLE] = Cluster().start()
    return os.environ[URL_VARIABLE]
