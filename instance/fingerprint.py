"""A SQLite database's fingerprint: its tables, their row counts and a SHA-256 over every row in rowid order (each
value tagged and length-delimited, read as bytes: twice as fast as hashing the rows' repr; hashed in a second
thread while the next rows are read).

One definition for both sides, standard library only: the instance runs it on its live database at a transaction
Litestream has synced (`fingerprint_at_synced_txid`, reported to the control plane), and the control plane's restore
drills (`backups.drills`, which loads this file by path: the instance's program is not a package of the project)
run `database_fingerprint` on the restored copy of that transaction; equal fingerprints mean the backup holds
exactly what the instance had.
"""

import hashlib
import queue
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

# Rows hashed a batch at a time: the same rows give the same hash, at a fraction of the cost of one update per row.
FINGERPRINT_BATCH = 1000
# Litestream 0.5 keeps the LTX files it has written for a database `<dir>/<name>` under
# `<dir>/.<name>-litestream/ltx/0/<min txid>-<max txid>.ltx` (16 hex digits each).
LOCAL_LTX_NAME = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})\.ltx")


def _encoded(batch: list[tuple]) -> bytes:
    """Rows as they are hashed: each `r`, then each value tagged and delimited so that no two rows' values run into
    one another: `n` for NULL, `b<length>:<bytes>` for TEXT and BLOB alike (read as bytes: no decoding, no repr of a
    long string), `v<repr>;` for INTEGER and REAL (repr round-trips). One join: each value is copied once."""
    parts = []
    add = parts.append
    for row in batch:
        add(b"r")
        for value in row:
            if value is None:
                add(b"n")
            elif isinstance(value, bytes):
                add(b"b%d:" % len(value))
                add(value)
            else:
                add(b"v%b;" % repr(value).encode())
    return b"".join(parts)


@contextmanager
def _sha256_beside():
    """(feed, digest): a SHA-256 fed from a second thread. hashlib lets go of the GIL while it hashes a large buffer,
    so one batch is hashed while the next is read and encoded; the digest is the same as fed in order."""
    digest, pending = hashlib.sha256(), queue.Queue(maxsize=4)

    def hash_pending():
        while (chunk := pending.get()) is not None:
            digest.update(chunk)

    hasher = threading.Thread(target=hash_pending, name="fingerprint-sha256", daemon=True)
    hasher.start()
    try:
        yield pending.put, digest
    finally:
        pending.put(None)
        hasher.join()


def _fingerprint(connection: sqlite3.Connection) -> dict:
    connection.text_factory = bytes
    tables = [name.decode() for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE '_litestream_%' ORDER BY name")]
    counts = {}
    with _sha256_beside() as (feed, digest):
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            feed(f"table {table}\n".encode())
            counts[table] = 0
            rows = connection.execute(f"SELECT * FROM {quoted} ORDER BY rowid")
            while batch := rows.fetchmany(FINGERPRINT_BATCH):
                feed(_encoded(batch))
                counts[table] += len(batch)
    return {"tables": counts, "sha256": digest.hexdigest()}


def interrupt_after(connection: sqlite3.Connection, deadline: float) -> None:
    """Past `deadline` (a `time.monotonic()` instant) SQLite interrupts the connection's statement (raising
    sqlite3.OperationalError): it asks every few thousand virtual machine instructions, a negligible cost."""
    connection.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)


def database_fingerprint(path: Path, *, deadline: float | None = None) -> dict:
    """The fingerprint of the database at `path`, opened read-only; interrupted past `deadline` if one is given."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    if deadline is not None:
        interrupt_after(connection, deadline)
    try:
        return _fingerprint(connection)
    finally:
        connection.close()


def litestream_position(path: Path) -> tuple[int, int] | None:
    """(newest txid Litestream has written an LTX file for, that file's mtime in ns), or None when none."""
    level0 = path.parent / f".{path.name}-litestream" / "ltx" / "0"
    try:
        files = [(int(match.group(2), 16), entry) for entry in level0.iterdir()
                 if (match := LOCAL_LTX_NAME.fullmatch(entry.name))]
        if not files:
            return None
        txid, newest = max(files, key=lambda pair: pair[0])
        return txid, newest.stat().st_mtime_ns
    except OSError:
        return None


def _synced_position(path: Path) -> int | None:
    """Litestream's newest txid when it has caught up with the database: its newest LTX file was written after
    the last write to the WAL (so it holds every committed transaction); None otherwise."""
    position = litestream_position(path)
    try:
        wal_written = path.with_name(f"{path.name}-wal").stat().st_mtime_ns
    except OSError:
        wal_written = 0
    if position is None or wal_written > position[1]:
        return None
    return position[0]


def fingerprint_at_synced_txid(path: Path) -> tuple[int, dict] | None:
    """(txid, fingerprint) of the database exactly as of a transaction Litestream has written out, or None when
    it has not caught up or moved on while the fingerprint was taken (a write landed: try again later).

    One read transaction holds one snapshot; Litestream's position, caught up with the WAL before the snapshot
    starts and unchanged after the fingerprint, means no transaction committed in between: the snapshot is that
    txid's state."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        before = _synced_position(path)
        connection.execute("BEGIN")
        # The snapshot starts at the first read, not at BEGIN.
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        fingerprint = _fingerprint(connection)
        connection.execute("COMMIT")
        after = _synced_position(path)
    finally:
        connection.close()
    if before is None or before != after:
        return None
    return before, fingerprint
