"""The local backend: each team's instance runs as processes on this machine.

The same entrypoint as the container (`instance/entrypoint.py`, run by the instance's own virtualenv), the
same credential exchange over HTTP, a directory per team as its volume and a free port per team. Processes
are started in their own session so they outlive a killed worker; a pid file plus the process's own
environment (CLOUDCTL_TEAM_ID) let any later run find them again instead of starting a duplicate.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .base import BackendError, BackendUnavailable, ObservedState
from .host import HostBackend

# The instance's program, in the repository beside the control plane (instance/).
ENTRYPOINT = Path(__file__).resolve().parents[2] / "instance" / "entrypoint.py"
STOP_TIMEOUT_SECONDS = 20
# The only variables of the control plane's environment an instance gets (see instance_environment()).
INHERITED_VARIABLES = ("LANG", "LC_ALL", "TZ")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, read from /proc."""
    try:
        # Reap the leader if it is our own exited child, so it does not linger as a zombie.
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _environment_variable(pid: int, name: str) -> str | None:
    """A variable of the environment a process was started with, read from /proc."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = f"{name}=".encode()
    for entry in environ:
        if entry.startswith(prefix):
            return entry[len(prefix):].decode()
    return None


def _live_group(pid_file: Path, variable: str, value: str) -> int | None:
    """The process group id in `pid_file` if one of its processes still runs with `variable`=`value` in its
    environment (which guards against a recycled pid), else None."""
    try:
        pgid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if any(_environment_variable(member, variable) == value for member in _group_members(pgid)):
        return pgid
    return None


def _stop_group(pgid: int, still_alive: Callable[[], bool]) -> None:
    """SIGTERM to the group, SIGKILL if it outlives STOP_TIMEOUT_SECONDS."""
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline and still_alive():
        time.sleep(0.2)
    if still_alive():
        os.killpg(pgid, signal.SIGKILL)


class LocalBackend(HostBackend):
    """Options (`get_backend` passes them from the settings): `instances_dir`, where each team's directory (its
    "volume", pid file and log) goes; `python`, the instance virtualenv's interpreter; `health_timeout`, how long a
    started instance may take to answer HTTP."""

    def __init__(self, *, instances_dir: str | Path, python: str | Path, health_timeout: float, spec_for=None):
        super().__init__(spec_for=spec_for)
        self.instances_dir, self.python, self.health_timeout = Path(instances_dir), Path(python), health_timeout

    def default_image_prefixes(self) -> None:
        # An image here is only a label on processes running this checkout's code.
        return None

    def team_dir(self, instance) -> Path:
        return self.instances_dir / f"team-{instance.team_id}"

    # --- steps ------------------------------------------------------------------------------------------

    def ensure_volume(self, instance) -> dict:
        data = self.team_dir(instance) / "data"
        data.mkdir(parents=True, exist_ok=True)
        return {"volume": str(data)}

    # A restore's directory: restores/<id>/ beside the live volume, with the preview's pid file and log.

    def live_volume_path(self, instance) -> Path:
        return self.team_dir(instance) / "data"

    def restore_dir(self, instance, restore_id: int) -> Path:
        restore_dir = self.team_dir(instance) / "restores" / str(int(restore_id))
        restore_dir.mkdir(parents=True, exist_ok=True)
        return restore_dir

    def litestream_path(self) -> str:
        return str(self.python.parent / "litestream")

    def _live_preview(self, instance, restore_id: int) -> int | None:
        return _live_group(self.restore_dir(instance, restore_id) / "preview.pid", "CLOUDCTL_PREVIEW_OF",
                           f"{instance.team_id}/{int(restore_id)}")

    def preview_running(self, instance, restore_id: int) -> bool:
        return self._live_preview(instance, restore_id) is not None

    def spawn_preview(self, instance, restore_id: int, port: int, preview_secret: str) -> None:
        restore_dir = self.restore_dir(instance, restore_id)
        env = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
        # Nothing of the team's spec: a preview holds no token and no credentials (instance/entrypoint.py).
        env.update({"PATH": f"{self.python.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                    "HOME": str(restore_dir), "DATA_DIR": str(restore_dir / "data"), "PORT": str(port),
                    "CLOUDCTL_BIND": "127.0.0.1", "CLOUDCTL_PREVIEW_OF": f"{instance.team_id}/{int(restore_id)}"})
        with open(restore_dir / "preview.log", "ab") as log:
            process = subprocess.Popen(
                [str(self.python), str(ENTRYPOINT)], env={**env, "CLOUDCTL_PREVIEW_SECRET": preview_secret},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=restore_dir,
                start_new_session=True)
        (restore_dir / "preview.pid").write_text(str(process.pid))

    def preview_log(self, instance, restore_id: int) -> str:
        log = self.restore_dir(instance, restore_id) / "preview.log"
        return log.read_text(errors="replace").strip().splitlines()[-1] if log.exists() and log.stat().st_size else ""

    def stop_preview(self, instance, restore_id: int) -> None:
        pgid = self._live_preview(instance, restore_id)
        if pgid is not None:
            _stop_group(pgid, lambda: self._live_preview(instance, restore_id) is not None)

    def stop_before_swap(self, instance) -> None:
        self._terminate(instance)

    def delete_restore_volumes(self, instance, restore_id: int) -> None:
        self.stop_preview(instance, restore_id)
        shutil.rmtree(self.restore_dir(instance, restore_id), ignore_errors=True)

    def ensure_running(self, instance) -> dict:
        """Start the instance unless its process is already alive; never two processes for one team."""
        with self.team_lock(instance):
            pid = self._live_pid(instance)
            if pid is not None:
                # Read from the process, not the database: a run killed between the start and saving its resources
                # left a live instance whose port only the process knows. Only from the group's leader, the shell
                # this backend started: the instance's own processes (a team's plugins) can rewrite theirs.
                running_port = _environment_variable(pid, "PORT")
                if running_port is None:  # the shell outlives the entrypoint: what is left is ending
                    raise BackendUnavailable("the team's previous instance is still ending; try again")
                return self._resources(pid, int(running_port))
            port = self.team_port(instance)
            process = self._spawn(instance, port)
            (self.team_dir(instance) / "instance.pid").write_text(str(process.pid))
            return self._resources(process.pid, port)

    @staticmethod
    def _resources(pid: int, port: int) -> dict:
        return {"pid": pid, "port": port, "url": f"http://127.0.0.1:{port}/"}

    def exit_watch(self, instance):
        seen_gone = 0

        def exited() -> bool:
            # Dead means an exit code was recorded, or gone on two checks in a row: a single misread of /proc
            # right after the start once failed a healthy instance in `make dev`.
            nonlocal seen_gone
            seen_gone = seen_gone + 1 if self._live_pid(instance) is None else 0
            return seen_gone >= 2 or (self.team_dir(instance) / "exit-code").exists()

        return exited

    def start_lock_path(self, instance) -> Path:
        return self.team_dir(instance) / "start.lock"

    # --- operations -------------------------------------------------------------------------------------

    def observe(self, instance) -> ObservedState:
        if not self.team_dir(instance).exists():
            return ObservedState.MISSING
        if self._live_pid(instance) is not None:
            return ObservedState.RUNNING
        return ObservedState.CRASHED if self._crashed(instance) else ObservedState.STOPPED

    def stop(self, instance) -> None:
        """Stopped on purpose: it stays stopped, an update included (see `_restart_marker`)."""
        self._restart_marker(instance).unlink(missing_ok=True)
        self._terminate(instance)

    def _terminate(self, instance) -> None:
        pgid = self._live_pid(instance)
        if pgid is None:
            return
        # The instance leads its own process group: Litestream and Datasette stop with it, after a final sync.
        _stop_group(pgid, lambda: self._live_pid(instance) is not None)

    def destroy(self, instance) -> None:
        self.stop(instance)
        for preview in (self.team_dir(instance) / "restores").glob("*/preview.pid"):
            self.stop_preview(instance, int(preview.parent.name))
        shutil.rmtree(self.team_dir(instance), ignore_errors=True)

    def update(self, instance, image: str, *, before_change=None) -> dict:
        """A running instance restarts on `image` and must answer its health check, as a crashed one is started
        (it should run: an earlier start or update failed); a stopped one stays stopped and starts on `image`
        next time. The version replaced is the running process's own, else the one it would start on."""
        pgid = self._live_pid(instance)
        current = self._version(pgid) if pgid is not None else instance.image
        if current != image and before_change:
            before_change(current)
        if pgid is not None and current == image:
            self.wait_healthy(instance)
            return {}
        if pgid is not None:
            self._restart_marker(instance).touch()
            self._terminate(instance)
        elif not (self._crashed(instance) or self._restart_marker(instance).exists()):
            instance.image = image  # a stopped instance stays stopped and starts on it next time
            return {}
        return self._start_on(instance, image)

    def running_image(self, instance) -> str | None:
        """The version the live process was started with, read from its own environment; None when none runs
        (a stopped instance starts on the instance's recorded image, which is the database's word, not ours)."""
        pgid = self._live_pid(instance)
        return self._version(pgid) if pgid is not None else None

    def _start_on(self, instance, image: str) -> dict:
        """Start the instance on `image` and wait for its health check, then read the process's version back: the
        start adopts a process someone else started meanwhile (a provisioning run, on the database's image)."""
        instance.image = image
        resources = self.start(instance)
        running = self._version(resources["pid"])
        if running != image:
            raise BackendError(f"its process runs {running} instead of {image}: another start came first")
        return resources

    @staticmethod
    def _version(pgid: int) -> str | None:
        return _environment_variable(pgid, "CLOUDCTL_INSTANCE_VERSION")

    def log_tail(self, instance, lines: int = 15) -> str:
        log = self.team_dir(instance) / "instance.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    # --- internals --------------------------------------------------------------------------------------

    def _restart_marker(self, instance) -> Path:
        """Present from an update's stop to the next start: an update killed in between (a killed deploy) left
        an instance that should run, which the next update starts."""
        return self.team_dir(instance) / "restarting"

    def _crashed(self, instance) -> bool:
        """The last process exited with an error: 0 is a clean exit (max age, idle), 143 a stop with SIGTERM."""
        exit_file = self.team_dir(instance) / "exit-code"
        return exit_file.exists() and exit_file.read_text().strip() not in ("0", "143")

    def _live_pid(self, instance) -> int | None:
        """The instance's process group id if any of its processes still runs, else None."""
        return _live_group(self.team_dir(instance) / "instance.pid", "CLOUDCTL_TEAM_ID", str(instance.team_id))

    def _spawn(self, instance, port: int) -> subprocess.Popen:
        python = self.python
        if not python.exists():
            raise BackendError(f"the instance virtualenv is missing ({python}): run `make instance-venv`")
        team_dir = self.team_dir(instance)
        (team_dir / "exit-code").unlink(missing_ok=True)
        self._restart_marker(instance).unlink(missing_ok=True)
        # A shell records the exit code, so a crash is told apart from a clean stop after we are gone.
        command = '"$0" "$1"; echo $? > "$2"'
        with open(team_dir / "instance.log", "ab") as log:
            return subprocess.Popen(
                ["/bin/sh", "-c", command, str(python), str(ENTRYPOINT), str(team_dir / "exit-code")],
                env=self.instance_environment(instance, port), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=team_dir, start_new_session=True,
            )

    def instance_environment(self, instance, port: int) -> dict[str, str]:
        """What the instance's processes start with: built from nothing, never from this process's environment,
        which holds the control plane's secrets (the S3 admin keys of embedded.env, DJANGO_SECRET_KEY,
        CLOUDCTL_TOKEN_KEYS, DATABASE_URL). Only the locale and time zone are passed on, and a CA bundle
        for an https S3 endpoint (the rule of instance/README.md: none for plain http). The rest is the
        instance's spec (its environment and, here, its secrets too) and where it runs on this machine."""
        team_dir, spec = self.team_dir(instance), self.spec_for(instance)
        env = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
        env.update({
            **spec.env,
            **spec.secrets,
            "PATH": f"{self.python.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(team_dir),
            "DATA_DIR": str(team_dir / "data"),
            "PORT": str(port),
            "CLOUDCTL_BIND": "127.0.0.1",
        })
        if os.environ.get("AWS_CA_BUNDLE") and not spec.env.get("CLOUDCTL_S3_ENDPOINT", "").startswith("http://"):
            env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
        return env
