"""Reading a team's Litestream replica from the control plane, with read-only credentials for the team's prefix.

The credentials come from the credentials app, which sits above this one: it plugs its minting in when it loads
(`CredentialsConfig.ready`), as deploys plugs into `instances.rollouts`. Listing a replica is one ListObjectsV2
page per thousand files, then a ranged GET of each file's 100-byte header (its last transaction's time and the
database's size then), eight at a time.
"""

import functools
import re
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from teams.models import Team
from teams.permissions import Actor

from .window import SNAPSHOT_LEVEL, LTXFile, RestorableWindow, ltx_name_txids, restorable_window

# What a database may be called on an instance (instance/entrypoint.py's SAFE_DATABASE_NAME), and its default.
DATABASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.db")
DEFAULT_DATABASE = "data.db"
# Litestream's S3 client writes level N's files under `<replica path>/<N as %04x>/` (s3/replica_client.go).
LEVEL_DIRECTORY = re.compile(r"[0-9a-f]{4}")
# The LTX header (superfly/ltx `Header.MarshalBinary`): magic, flags, page size, commit (pages), min and max
# txid, timestamp (Unix milliseconds), big-endian.
LTX_HEADER = struct.Struct(">4sIIIQQq")
LTX_HEADER_BYTES = 100
LTX_MAGIC = b"LTX1"
HEADER_READERS = 8
S3_TIMEOUT_SECONDS = 10


class Credentials(Protocol):
    access_key_id: str
    secret_access_key: str
    session_token: str


class UnreadableReplica(Exception):
    """The replica could not be read (credentials, storage, a damaged file); the message is safe to show."""


def _not_plugged_in(team: Team, *, actor: Actor) -> Credentials:
    raise UnreadableReplica("no read-only credentials: the credentials app is not installed")


# Read-only credentials for the team's prefix (credentials.services.mint_read_only_credentials, plugged in), and
# the exception it raises when STS cannot mint them (its message is safe to show).
read_only_credentials: Callable[..., Credentials] = _not_plugged_in
minting_failed: type[Exception] = UnreadableReplica


def plug_in(*, mint_read_only: Callable[..., Credentials], failure: type[Exception]) -> None:
    global read_only_credentials, minting_failed
    read_only_credentials, minting_failed = mint_read_only, failure


def replica_path(team: Team, database: str) -> str:
    """Where an instance's Litestream replicates `database` (instance/entrypoint.py's `litestream_config`)."""
    if not DATABASE_NAME.fullmatch(database):
        raise ValueError(f"not a database name (letters, digits, _ . -, ending in .db): {database!r}")
    return f"{team.storage_prefix}{database}"


@functools.cache
def _session() -> boto3.session.Session:
    """One boto3 session per process: a new one loads botocore's service models again (a fifth of a second per
    drill). The session holds no keys (each client gets its own) and clients are created under a lock, as a
    session is not safe to share between threads while creating them."""
    return boto3.session.Session()


_client_lock = threading.Lock()


def _s3(credentials: Credentials):
    """An S3 client on boto3's standard configuration (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION), with these keys."""
    with _client_lock:
        return _session().client(
            "s3", aws_access_key_id=credentials.access_key_id, aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
            config=Config(connect_timeout=S3_TIMEOUT_SECONDS, read_timeout=S3_TIMEOUT_SECONDS,
                          retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=HEADER_READERS))


def _read_header(s3, bucket: str, key: str, txids: tuple[int, int]) -> tuple[datetime, int]:
    """(time of the file's last transaction, database bytes after it) from the file's header. The replica is the
    team's to write: a header that is not an LTX one, names other txids than its file or no possible time is
    refused, never guessed."""
    body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{LTX_HEADER_BYTES - 1}")["Body"].read()
    if len(body) < LTX_HEADER.size:
        raise UnreadableReplica(f"{key}: shorter than an LTX header")
    magic, _flags, page_size, commit, min_txid, max_txid, milliseconds = LTX_HEADER.unpack_from(body)
    if magic != LTX_MAGIC or (min_txid, max_txid) != txids:
        raise UnreadableReplica(f"{key}: not the LTX file its name says")
    try:
        return datetime.fromtimestamp(milliseconds / 1000, tz=UTC), page_size * commit
    except (OverflowError, OSError, ValueError):
        raise UnreadableReplica(f"{key}: its header holds no possible time") from None


def list_ltx_files(s3, bucket: str, path: str) -> list[LTXFile]:
    """Every LTX file of the replica at `path` (on S3, `<path>/<level, 4 hex digits>/<min>-<max>.ltx`), headers
    read. Anything else there (a 0.3 generation, a lock) is not Litestream 0.5's and is left out."""
    listed = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{path}/"):
        for item in page.get("Contents", []):
            level, _, name = item["Key"].removeprefix(f"{path}/").partition("/")
            txids = ltx_name_txids(name)
            if LEVEL_DIRECTORY.fullmatch(level) and int(level, 16) <= SNAPSHOT_LEVEL and txids:
                listed.append((int(level, 16), *txids, item["Size"], item["Key"]))
    with ThreadPoolExecutor(HEADER_READERS) as pool:
        headers = list(pool.map(lambda entry: _read_header(s3, bucket, entry[-1], entry[1:3]), listed))
    return [LTXFile(level, min_txid, max_txid, size, created_at, database_bytes)
            for (level, min_txid, max_txid, size, _key), (created_at, database_bytes) in zip(listed, headers)]


def replica_window(team: Team, database: str, *, actor: Actor) -> RestorableWindow:
    """The restorable window of the team's `database`, read with read-only credentials minted for `actor`.
    Raises UnreadableReplica, and window.EmptyReplica when nothing was replicated."""
    return window_with_credentials(team, database, minted_read_only_credentials(team, actor=actor))


def minted_read_only_credentials(team: Team, *, actor: Actor) -> Credentials:
    """Read-only credentials for the team's prefix, minted for `actor`; raises UnreadableReplica."""
    try:
        return read_only_credentials(team, actor=actor)
    except minting_failed as error:
        raise UnreadableReplica(f"no read-only credentials: {error}") from None


def window_with_credentials(team: Team, database: str, credentials: Credentials) -> RestorableWindow:
    """The restorable window of the team's `database`, read with these credentials (see `replica_window`)."""
    path = replica_path(team, database)
    s3 = _s3(credentials)
    where = f"s3://{settings.BACKUP_BUCKET}/{path}/"
    try:
        files = list_ltx_files(s3, settings.BACKUP_BUCKET, path)
    except ClientError as error:
        raise UnreadableReplica(f"reading {where} failed: {error.response.get('Error', {}).get('Code')}") from None
    except BotoCoreError as error:
        raise UnreadableReplica(f"reading {where} failed: {type(error).__name__}") from None
    return restorable_window(files)
