"""`manage.py dev`: the whole control plane on one machine, no cloud account needed.

Starts the local S3/STS server, records how to reach it in the state dir's `embedded.env` (so every other
`manage.py` command on this machine uses it too), migrates SQLite, queues the periodic tasks
(`manage.py schedule_periodic`: the backup check, the audit's pruning), creates an admin user, serves the
control plane (every page and the private API, `cloudctl.urls`, on 127.0.0.1) with the private API's server,
runs the task worker and the embedded router (every team at http://<slug>.localhost:<router port>/, waking
instances that scaled to zero), reconciles the teams' local instances every few seconds (`instances.supervision`,
printing each team's URL as it comes up) and stops everything cleanly on Ctrl-C.
"""

import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from backups.restore import stop_previews
from cloudctl.local_s3 import LocalS3Server, free_port_set, port_is_free
from cloudctl.private_files import private_directory, read_or_create_secret, write_private_file
from instances.machines import get_backend
from instances.models import Instance
from instances.supervision import stop_all, supervise

SUPERVISE_EVERY_SECONDS = 3
# Local instances scale to zero after this long without a request, and the router wakes them on the next one.
DEV_IDLE_TIMEOUT = "10m"


def _admin_password() -> str:
    private_directory(settings.STATE_DIR)
    return read_or_create_secret(settings.STATE_DIR / "secrets" / "admin-password", lambda: secrets.token_urlsafe(12))


def _write_embedded_env(values: dict[str, str]) -> None:
    """The local S3's admin keys among them: 0600, in the 0700 state dir."""
    private_directory(settings.STATE_DIR)
    write_private_file(settings.EMBEDDED_ENV_FILE, "".join(f"{key}={value}\n" for key, value in sorted(values.items())))


def hold_state_lock(state_dir: Path):
    """One embedded stack per state directory: a second would share its database, S3 data and instances, and
    stopping it would stop the first one's instances. The lock goes with the process, however it ends."""
    private_directory(state_dir)
    handle = open(state_dir / "dev.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise CommandError(f"the embedded stack is already running from {state_dir} (pid {holder}): "
                           "use that one, or stop it first") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class Command(BaseCommand):
    help = "Run the control plane on this machine: local S3/STS, SQLite, the web server. Ctrl-C stops it all."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("CLOUDCTL_PORT", 8000)))
        parser.add_argument("--router-port", type=int, default=settings.ROUTER_PORT,
                            help="the embedded router's port: teams are at http://<slug>.localhost:<port>/")

    def handle(self, port, router_port, **options):
        self._lock = hold_state_lock(settings.STATE_DIR)
        # Stop the same way on Ctrl-C, on an INT sent to a background job (which otherwise ignores it) and on a
        # TERM from a supervisor.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        s3_home = settings.STATE_DIR / "local-s3"
        server = LocalS3Server(s3_home)
        wanted = server.config.ports
        if not all(port_is_free(p) and port_is_free(p + 10000) for p in wanted.values()):
            # Another service holds a default port: take free ones (kept for the next run).
            server = LocalS3Server(s3_home, ports=free_port_set())
        self.stdout.write(f"starting local S3/STS (SeaweedFS) on 127.0.0.1:{server.config.ports['s3']} ...")
        config = server.start()
        children: list[subprocess.Popen] = []
        try:
            embedded = {**config.client_environ(), **self._database_environ(),
                        "CLOUDCTL_PRIVATE_API_URL": f"http://127.0.0.1:{port}",
                        # Where browsers come back to (invitation links, the instances' sign-in redirect).
                        "CLOUDCTL_PUBLIC_URL": os.environ.get("CLOUDCTL_PUBLIC_URL", f"http://localhost:{port}"),
                        **self._routing_environ(router_port)}
            _write_embedded_env(embedded)
            os.environ.update(embedded)
            settings.PUBLIC_URL = embedded["CLOUDCTL_PUBLIC_URL"].rstrip("/")
            self._apply_routing_settings()
            call_command("migrate", verbosity=0)
            call_command("collectstatic", verbosity=0, interactive=False)
            call_command("schedule_periodic", stdout=self.stdout)  # the worker started below runs them
            password = self._ensure_admin()
            children.append(self._serve(port))
            children.append(self._worker())
            children.append(self._router(router_port))
            self._wait_until_serving(port, children[0])
            self._wait_until_serving(router_port, children[2])
            self._announce(port, password, config)
            self._run(children)
        finally:
            if get_backend(settings.MACHINE_BACKEND).runs_instances_here:
                stopped = stop_all(settings.MACHINE_BACKEND)
                previews = stop_previews(settings.MACHINE_BACKEND)
                self.stdout.write(f"stopped {stopped} team instance(s) and {previews} restore preview(s); they start "
                                  "again with `make dev`.")
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
            server.stop()
            self.stdout.write("stopped.")

    @staticmethod
    def _database_environ() -> dict[str, str]:
        """A DATABASE_URL given to `make dev` is kept with the stack's other settings (0600, var/embedded.env), so the
        commands run in another terminal (`manage.py create_team`) reach the same database; it stays for the next
        runs until another is given."""
        url = os.environ.get("DATABASE_URL")
        return {"DATABASE_URL": url} if url else {}

    @staticmethod
    def _database_description() -> str:
        """Which database, never its password."""
        database = settings.DATABASES["default"]
        if database["ENGINE"] == "django.db.backends.sqlite3":
            return f"SQLite {database['NAME']}"
        vendor = "PostgreSQL" if database["ENGINE"] == "django.db.backends.postgresql" else database["ENGINE"]
        return f"{vendor} {database['NAME']} on {database['HOST'] or 'localhost'}:{database['PORT'] or 'default port'}"

    def _ensure_admin(self) -> str:
        password = _admin_password()
        User = get_user_model()
        user, created = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        if created:
            user.set_password(password)
            user.save()
        return password

    def _serve(self, port: int) -> subprocess.Popen:
        # One process serves the dashboard, the admin, the private API and the metrics: only on 127.0.0.1, and
        # only because it asks for the combined URL conf (the default serves the operator pages alone). The
        # private API's server, as in production: local instances are as hostile as any.
        server = [sys.executable, "-m", "cloudctl.server", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
        return subprocess.Popen(server, env={**os.environ, "CLOUDCTL_URLCONF": "cloudctl.urls"}, cwd=settings.BASE_DIR)

    @staticmethod
    def _routing_environ(router_port: int) -> dict[str, str]:
        """Teams at http://<slug>.localhost:<router port>/ (browsers and curl resolve *.localhost to loopback),
        their instances scaling to zero when idle; what the environment already says wins."""
        wanted = {"CLOUDCTL_TEAMS_DOMAIN": "localhost", "CLOUDCTL_TEAMS_URL_SCHEME": "http",
                  "CLOUDCTL_TEAMS_URL_PORT": str(router_port), "CLOUDCTL_ROUTER_PORT": str(router_port),
                  "CLOUDCTL_INSTANCE_IDLE_TIMEOUT": DEV_IDLE_TIMEOUT}
        return {name: os.environ.get(name, value) for name, value in wanted.items()}

    @staticmethod
    def _apply_routing_settings() -> None:
        """This process read its settings before the lines above were in its environment."""
        settings.TEAMS_DOMAIN = os.environ["CLOUDCTL_TEAMS_DOMAIN"]
        settings.TEAMS_URL_SCHEME = os.environ["CLOUDCTL_TEAMS_URL_SCHEME"]
        settings.TEAMS_URL_PORT = int(os.environ["CLOUDCTL_TEAMS_URL_PORT"])
        settings.INSTANCE_IDLE_TIMEOUT = os.environ["CLOUDCTL_INSTANCE_IDLE_TIMEOUT"]

    def _router(self, router_port: int) -> subprocess.Popen:
        """The embedded router: Fly's proxy and the router in one (router/proxy.py)."""
        command = [sys.executable, "-m", "router.server", "--bind", f"127.0.0.1:{router_port}", "--mode", "embedded"]
        return subprocess.Popen(command, env=os.environ.copy(), cwd=settings.BASE_DIR)

    def _wait_until_serving(self, port: int, server: subprocess.Popen, timeout: float = 60) -> None:
        """The server listens once its first worker has loaded Django: announce the URLs only then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)

    def _worker(self) -> subprocess.Popen:
        worker = [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-reload"]
        return subprocess.Popen(worker, env=os.environ.copy(), cwd=settings.BASE_DIR)

    def _announce(self, port: int, password: str, config) -> None:
        base = f"http://127.0.0.1:{port}"
        second_factor = (
            "\n  Two-factor:   staff need TOTP (CLOUDCTL_STAFF_REQUIRE_2FA). The first sign-in enrolls it: the password"
            "\n                again, then scan the QR code with an authenticator app (or type the key shown) and"
            "\n                give a code; every later sign-in asks for one."
        ) if settings.STAFF_REQUIRE_2FA else ""
        # Sign-up verification, invitations and password resets: files here unless EMAIL_URL names an SMTP server.
        mail_dir = getattr(settings, "EMAIL_FILE_PATH", None)
        mail = f"each message a file in {mail_dir}/" if mail_dir else "sent through EMAIL_URL"
        self.stdout.write(self.style.SUCCESS(f"""
cloudctl is running on this machine (local S3/STS, everything on 127.0.0.1).

  Database:     {self._database_description()}

  Members:      {base}/   sign up at {base}/accounts/signup/ (CLOUDCTL_SIGNUP={settings.SIGNUP_MODE}); their teams at /teams/
  Mail:         {mail}   (address verification, invitations, password resets)

  Dashboard:    {base}/dashboard/   user: admin   password: {password}   (admin: {base}/admin/){second_factor}
  Private API:  {base}/private/v1/credentials
  Metrics:      {base}/private/metrics   (Authorization: Bearer <{settings.STATE_DIR}/secrets/metrics-token>)
  Local S3:     {config.endpoint_url}  bucket: {config.bucket}
  Teams:        {settings.TEAMS_URL_SCHEME}://<slug>.{settings.TEAMS_DOMAIN}:{settings.TEAMS_URL_PORT}/   (the router; \
idle instances scale to zero after {settings.INSTANCE_IDLE_TIMEOUT or 'never'} and wake on the next request)

In another terminal (the same database and local S3 are used automatically):
  .venv/bin/python manage.py create_team acme     # its URL appears here within seconds
  .venv/bin/python manage.py check_isolation
Ctrl-C stops everything.
"""))

    def _run(self, children: list[subprocess.Popen]) -> None:
        """Until Ctrl-C: watch the children, supervise local instances, print each team's URL once."""
        announced: dict[int, str] = {}
        last_pass = 0.0
        try:
            while all(child.poll() is None for child in children):
                if time.monotonic() - last_pass >= SUPERVISE_EVERY_SECONDS:
                    last_pass = time.monotonic()
                    for line in supervise(settings.MACHINE_BACKEND, actor="manage.py dev"):
                        self.stdout.write(line)
                    running = Instance.objects.filter(state=Instance.State.RUNNING).select_related("team")
                    for instance in running:
                        if announced.get(instance.team_id) != instance.url:
                            announced[instance.team_id] = instance.url
                            self.stdout.write(self.style.SUCCESS(
                                f"team {instance.team.slug}: {instance.team.subdomain_url}   "
                                f"(its instance: {instance.url})"))
                time.sleep(0.5)
            failed = next(child for child in children if child.poll() is not None)
            self.stderr.write(f"{' '.join(failed.args[1:4])} exited with code {failed.returncode}; stopping")
        except KeyboardInterrupt:
            self.stdout.write("\nstopping ...")
