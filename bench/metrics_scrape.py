#!/usr/bin/env python
"""A metrics scrape with 1,000 audit rows and with 1,000,000, side by side.

Two throwaway SQLite databases (the embedded default), one per size, are migrated and seeded with raw bulk
inserts in one transaction: audit rows spread over the retention period (issuances and the usual refusals, a
few throttled rows standing for many requests), plus the same 100 rows of the last minute at both sizes, which
are still settling and so counted live at every scrape. The settled rows are then folded into the totals
(`advance_totals`, what the scrapes of the rows' own time would have done bit by bit): timed and shown apart. Then `GET /private/metrics` is requested through Django's test client, alternating between the two
databases round after round so that noise on this shared machine hits both alike; the medians are kept. For
comparison, the former way (one GROUP BY over the whole table) is timed too.

    .venv/bin/python bench/metrics_scrape.py [--rounds 15]

Last line: `ratio: <median scrape at 1,000,000 rows / at 1,000>` (target: at most 1.5).
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SIZES = (1_000, 1_000_000)
RECENT = 100  # rows of the last minute, at both sizes
TARGET = 1.5
SCRAPES_PER_ROUND = 3
# (kind, reason, signal, request_count) and how often each occurs.
MIX = [(("issued", "", "", 1), 60), (("refused", "revoked", "", 1), 8), (("refused", "bad_signature", "backup", 1), 12),
       (("refused", "sts_unavailable", "", 1), 5), (("refused", "malformed", "", 1), 10),
       (("refused", "address_rate_limited", "", 37), 5)]


def setup_django(state_dir: str) -> None:
    Path(state_dir, "static").mkdir()
    os.environ.update({"DJANGO_SETTINGS_MODULE": "cloudctl.settings", "CLOUDCTL_STATE_DIR": state_dir,
                       "DJANGO_ALLOWED_HOSTS": "testserver", "CLOUDCTL_LOG_LEVEL": "WARNING",
                       # The metrics are served by the private URL conf only (the default is the public one).
                       "CLOUDCTL_URLCONF": "cloudctl.urls_private"})
    import django

    django.setup()


def use_database(path: Path) -> None:
    """Point the default connection at another SQLite file (reopened on its next query)."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = str(path)


def seed(size: int) -> int:
    """`size` audit rows, oldest first (ids in step with time, as written): all but RECENT of them spread over
    the retention period, RECENT within the last minute. One raw executemany in one transaction. Returns the
    number of requests the rows stand for."""
    from django.conf import settings
    from django.db import connection, transaction
    from django.utils import timezone

    from credentials.models import CredentialEvent
    from teams.models import Team

    team_ids = list(Team.objects.values_list("pk", flat=True))
    kinds = random.Random(size).choices([entry for entry, _ in MIX], weights=[weight for _, weight in MIX], k=size)
    now = timezone.now()
    start = now - timedelta(days=settings.AUDIT_RETENTION_DAYS - 1)
    old_span = (now - timedelta(minutes=5) - start) / max(1, size - RECENT)
    columns = ["kind", "reason", "signal", "request_count", "team_id", "created_at", "client_ip", "user_agent",
               "response_format", "access_key_id", "session_name", "token_fingerprint"]
    table = CredentialEvent._meta.db_table

    def rows():
        for n, (kind, reason, signal, count) in enumerate(kinds):
            created_at = start + old_span * n if n < size - RECENT else now - timedelta(seconds=size - n)
            yield (kind, reason, signal, count, team_ids[n % len(team_ids)] if kind == "issued" else None,
                   created_at.isoformat(sep=" "), f"10.{n % 200}.{n // 200 % 250}.{n % 250 + 1}", "litestream/0.5",
                   "credential-process" if kind == "issued" else "", f"ASIA{n:016d}" if kind == "issued" else "",
                   f"cloudctl-team-{n}" if kind == "issued" else "", "" if kind == "issued" else f"{n:064x}")

    with connection.cursor() as cursor:  # a bench database: speed over durability while seeding
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA cache_size=-262144")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                           rows())
    with connection.cursor() as cursor:  # as a live database's would have been by now, bit by bit
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(count for *_, count in kinds)


def scrape_time(client, token: str) -> float:
    started = time.perf_counter()
    response = client.get("/private/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and b"cloudctl_credential_events_total" in response.content
    return elapsed


def full_group_by_time() -> float:
    """The former scrape's audit query: every row, grouped."""
    from django.db.models import Count

    from credentials.models import CredentialEvent

    started = time.perf_counter()
    list(CredentialEvent.objects.order_by().values_list("kind", "reason", "signal").annotate(n=Count("pk")))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of SCRAPES_PER_ROUND scrapes per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudctl-bench-metrics-") as state_dir:
        setup_django(state_dir)
        from django.conf import settings
        from django.core.management import call_command
        from django.test import Client

        from credentials.retention import advance_totals, credential_event_totals
        from teams.models import Team

        client = Client()
        databases = {size: Path(state_dir, f"audit-{size}.sqlite3") for size in SIZES}
        catch_up, former = {}, {}
        for size, path in databases.items():
            use_database(path)
            call_command("migrate", verbosity=0)
            Team.objects.bulk_create(Team(slug=f"team-{n:03d}", name=f"Team {n}", region="ord") for n in range(200))
            scrape_time(client, settings.METRICS_TOKEN)  # warm-up: the process's first request costs the most
            started = time.perf_counter()
            requests = seed(size)
            print(f"seeded {size:,} audit rows in {time.perf_counter() - started:.1f} s", flush=True)
            started = time.perf_counter()
            advance_totals()
            catch_up[size] = time.perf_counter() - started
            assert sum(credential_event_totals().values()) == requests  # every request counted, once
            former[size] = full_group_by_time()
        times = {size: [] for size in SIZES}
        for _ in range(args.rounds):
            for size, path in databases.items():
                use_database(path)
                scrape_time(client, settings.METRICS_TOKEN)  # the connection's first query opens the file
                times[size] += [scrape_time(client, settings.METRICS_TOKEN) for _ in range(SCRAPES_PER_ROUND)]
        results = {size: (statistics.median(times[size]), catch_up[size], former[size]) for size in SIZES}

        small, large = SIZES
        print(f"\nGET /private/metrics, median of {args.rounds * SCRAPES_PER_ROUND} scrapes per size "
              f"({RECENT} rows of the last minute counted live)")
        print(f"{'':34} {f'{small:,} rows':>14} {f'{large:,} rows':>14}")
        for index, name in enumerate(["scrape", "folding the seed in (once)", "former: GROUP BY every row"]):
            print(f"{name:34} {results[small][index] * 1000:11.1f} ms {results[large][index] * 1000:11.1f} ms")
        ratio = results[large][0] / results[small][0]
        print(f"target ratio <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}")
        print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
