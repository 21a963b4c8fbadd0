"""The embedded stack as `manage.py dev` runs it, for the benches that need real teams: local S3/STS, the control
plane's server (the private API), the task worker and the router, each its own process on 127.0.0.1, on a
throwaway state directory and SQLite database. The instances' private API is reached through a fake of its sign-in
endpoints (tests/instance_sso.py, everything else forwarded), which confirms the benches' tester as an owner of
every team: requests sign in with `signed_in(team)`; or, with `real_sign_in`, the control plane itself, whose
members sign in through its /sso/authorize (bench/sso.py). Not a bench: `make bench` runs the scripts directly in
bench/."""

import functools
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.support.datasette import REPO, answers, free_port, poll


@functools.cache
def volume_directory(volume: str) -> str:
    """Where a team's volume is on this host: the local backend's is a directory, the container backend's a podman
    volume (by name)."""
    if Path(volume).is_absolute():
        return volume
    from tests.images import podman

    return podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip()


@dataclass
class EmbeddedStack:
    work: Path
    router_port: int
    bucket: str  # the local S3's backup bucket
    control_plane_url: str  # its public pages and its private API, one server as in `manage.py dev`

    def signed_in(self, team) -> dict | None:
        """The Cookie header of the tester signed in to the team's instance; None until its volume has its secret."""
        from instances.models import Instance
        from tests.instance_sso import as_tester

        instance = Instance.objects.filter(team=team).first()
        volume = instance and instance.resources.get("volume")
        try:
            return as_tester(volume_directory(volume)) if volume else None
        except FileNotFoundError:
            return None

    def through_router(self, slug: str, path: str = "/") -> tuple[str, dict]:
        """The URL and headers of http://<slug>.localhost:<port><path> (connecting to loopback directly)."""
        return f"http://127.0.0.1:{self.router_port}{path}", {"Host": f"{slug}.localhost:{self.router_port}"}


@contextmanager
def embedded_stack(name: str, *, real_sign_in: bool = False):
    """Django set up in this process on the stack's database (so the bench calls services directly), the
    stack's processes running; every instance and process stopped on the way out, whatever happened."""
    from cloudctl.local_s3 import LocalS3Server, free_port_set
    from tests.instance_sso import TESTER, FakeSSO, member

    work = Path(tempfile.mkdtemp(prefix=f"cloudctl-bench-{name}-"))
    s3 = LocalS3Server(work / "s3", ports=free_port_set())
    config = s3.start()
    port, router_port = free_port(), free_port()
    control_plane_url = f"http://127.0.0.1:{port}"
    sso = None if real_sign_in else FakeSSO(team_token=None, forward_to=control_plane_url,
                                            everyone=member(TESTER, "owner")).__enter__()
    os.environ.pop("AWS_CA_BUNDLE", None)
    os.environ.update({
        **config.client_environ(),
        "DJANGO_SETTINGS_MODULE": "cloudctl.settings",
        "CLOUDCTL_STATE_DIR": str(work / "state"),
        "CLOUDCTL_PRIVATE_API_URL": sso.url if sso else control_plane_url,
        # As `manage.py dev` sets them: the instances' sign-in redirect, and their callback URLs
        # (http://<slug>.localhost:<router port>/), name this stack's servers.
        "CLOUDCTL_PUBLIC_URL": control_plane_url,
        "CLOUDCTL_TEAMS_URL_SCHEME": "http",
        "CLOUDCTL_TEAMS_URL_PORT": str(router_port),
        "CLOUDCTL_LOG_LEVEL": "WARNING",
        "CLOUDCTL_URLCONF": "cloudctl.urls",
        "CLOUDCTL_TEAMS_DOMAIN": "localhost",
    })
    children = []
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        logs = open(work / "control-plane.log", "ab")
        for command in (
            [sys.executable, "-m", "cloudctl.server", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-reload", "--no-startup-delay"],
            [sys.executable, "-m", "router.server", "--bind", f"127.0.0.1:{router_port}", "--mode", "embedded"],
        ):
            children.append(subprocess.Popen(command, cwd=REPO, stdout=logs, stderr=logs))
        poll(lambda: answers(f"{control_plane_url}/accounts/login/"), "the control plane")
        yield EmbeddedStack(work=work, router_port=router_port, bucket=config.bucket,
                            control_plane_url=control_plane_url)
    finally:
        from django.apps import apps

        if apps.ready:
            from django.conf import settings

            from instances.supervision import stop_all

            stop_all(settings.MACHINE_BACKEND)
        for child in children:
            child.terminate()
            child.wait()
        s3.stop()
        if sso:
            sso.__exit__(None, None, None)
