"""Restore drills: a drill's restore time against a bare `litestream restore` of the same replica, and how many
teams one worker drills per hour.

Run from the repository root: `.venv/bin/python bench/drill.py`. All on 127.0.0.1, in a throw-away directory:
a real SeaweedFS S3 + STS (`cloudctl.local_s3.LocalS3Server`), a fresh SQLite state dir (migrated), one team
whose `data.db` (BENCH_DRILL_ROWS rows of ~1 KB, a few changes after) is replicated by Litestream. Then,
alternating over BENCH_DRILL_ROUNDS rounds so that noise on this shared machine hits both alike:

- bare: `litestream restore -o <tmp> <db>` of the latest point with read-only credentials minted once, no
  integrity check;
- drill: `backups.drills.drill_team`: mint read-only credentials, read the window, restore that txid into the
  scratch sandbox (the drill's restore time, which it records as `restore_seconds`), then SQLite's full integrity
  check beside the fingerprint, remove the sandbox, record (the whole drill, timed around the call).

The last line is `ratio: <median drill restore seconds / median bare seconds>` (the issue's measure: a drill's
restore time against a bare restore; target at most 1.2). Before it: the whole drill against the bare restore (what
the checks after the restore add), and teams drilled per hour (3600 / the whole drill's median, one drill at a
time, as the periodic task runs them).
"""

import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ROWS = int(os.environ.get("BENCH_DRILL_ROWS", 100_000))
ROUNDS = int(os.environ.get("BENCH_DRILL_ROUNDS", 5))


def main() -> None:
    from cloudctl.local_s3 import LocalS3Server, free_port_set

    work = Path(tempfile.mkdtemp(prefix="bench-drill-"))
    server = LocalS3Server(work / "s3", ports=free_port_set())
    config = server.start()
    try:
        for key in [key for key in os.environ if key.startswith(("AWS_", "CLOUDCTL_", "DJANGO_"))]:
            del os.environ[key]
        os.environ.update(config.client_environ())
        (work / "state" / "static").mkdir(parents=True)
        os.environ.update({"DJANGO_SETTINGS_MODULE": "cloudctl.settings", "CLOUDCTL_STATE_DIR": str(work / "state"),
                           "CLOUDCTL_TOKEN_KEYS": secrets.token_urlsafe(50),
                           "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)})
        import django

        django.setup()
        run(work)
    finally:
        server.stop()


def run(work: Path) -> None:
    from django.conf import settings
    from django.core.management import call_command

    from backups import drills
    from backups.replicas import minted_read_only_credentials
    from instances.backends.replica_restore import host_litestream, restore_config, restore_environment
    from teams.services import create_team

    call_command("migrate", verbosity=0)
    team = create_team("bench-drill", actor="bench")
    database = work / "live" / "data.db"
    database.parent.mkdir()
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    with connection:
        connection.executemany("INSERT INTO notes (body) VALUES (?)",
                               ((secrets.token_hex(500),) for _ in range(ROWS)))
    connection.close()
    litestream_config = work / "live" / "litestream.yml"
    credentials = minted_read_only_credentials(team, actor="bench")
    source = drills.replica_source(team, "data.db", "", credentials)
    litestream_config.write_text(restore_config(source, database))
    admin_env = {**os.environ, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    replicated = subprocess.run([host_litestream(), "replicate", "-once", "-config", str(litestream_config)],
                                env=admin_env, capture_output=True, text=True)
    assert replicated.returncode == 0, replicated.stderr
    print(f"replica: {ROWS} rows, {database.stat().st_size / 1e6:.1f} MB; {ROUNDS} rounds", flush=True)

    bare_env = restore_environment(source)
    bare_times, drill_restore_times, drill_times = [], [], []
    for round_number in range(ROUNDS):
        output = work / f"bare-{round_number}.db"
        started = time.perf_counter()
        bare = subprocess.run([host_litestream(), "restore", "-config", str(litestream_config),
                               "-no-expand-env", "-o", str(output), str(database)],
                              env=bare_env, capture_output=True, text=True)
        bare_times.append(time.perf_counter() - started)
        assert bare.returncode == 0, bare.stderr
        output.unlink()
        started = time.perf_counter()
        drill = drills.drill_team(team, actor="bench")
        drill_times.append(time.perf_counter() - started)
        assert drill.passed, drill.message
        drill_restore_times.append(drill.restore_seconds)
        print(f"round {round_number + 1}: bare {bare_times[-1]:.3f} s, drill's restore {drill.restore_seconds:.3f} s,"
              f" whole drill {drill_times[-1]:.3f} s", flush=True)
    bare_median, drill_median = statistics.median(bare_times), statistics.median(drill_times)
    drill_restore_median = statistics.median(drill_restore_times)
    print(f"bare litestream restore: median {bare_median:.3f} s; drill's restore: median {drill_restore_median:.3f} s;"
          f" whole drill: median {drill_median:.3f} s (timeout {settings.DRILL_TIMEOUT} s)")
    print(f"whole drill (restore, integrity check, fingerprint, cleanup) / bare: {drill_median / bare_median:.2f}")
    print(f"teams drilled per hour (one at a time, this size): {3600 / drill_median:.0f}")
    print(f"ratio: {drill_restore_median / bare_median:.2f}")


if __name__ == "__main__":
    main()
