#!/usr/bin/env python
"""The dashboard's team list at 100 teams and at 10,000, side by side.

A throwaway SQLite database (the embedded default) is migrated and seeded with bulk inserts (teams with a
running instance, their backup heartbeats spread over the last hour); a staff user requests the list through
Django's test client, several rounds each, and the median is kept. Also shown: SQL statements per request
(the same at both sizes) and two filtered views.

    .venv/bin/python bench/dashboard.py [--rounds 30]

Last line: `ratio: <median list time at 10,000 / at 100>` (target: under 2.0).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SIZES = (100, 10_000)
VIEWS = {"list": "/dashboard/teams/", "search": "/dashboard/teams/?q=team-0004", "stale filter":
         "/dashboard/teams/?backup=stale"}


def setup_django(state_dir: str) -> None:
    os.environ.update({"DJANGO_SETTINGS_MODULE": "cloudctl.settings", "CLOUDCTL_STATE_DIR": state_dir,
                       "DJANGO_ALLOWED_HOSTS": "testserver", "CLOUDCTL_LOG_LEVEL": "WARNING"})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(start: int, stop: int) -> None:
    """Teams start..stop-1 with running instances, in batches of bulk inserts (no provisioning queued)."""
    from django.db import transaction
    from django.utils import timezone

    from instances.models import Instance
    from teams.models import Team

    now = timezone.now()
    with transaction.atomic():
        teams = Team.objects.bulk_create(
            (Team(slug=f"team-{n:05d}", name=f"Team {n}", region="ord") for n in range(start, stop)), batch_size=2000)
        Instance.objects.bulk_create(
            (Instance(team=team, backend="instances.backends.local.LocalBackend", state=Instance.State.RUNNING,
                      image="local", url=f"http://127.0.0.1:{20000 + n % 40000}/",
                      backups_expected_since=now - timedelta(hours=2),
                      # one team in 50 has not backed up for an hour: stale
                      last_backup_at=now - timedelta(minutes=60 if n % 50 == 0 else n % 10))
             for n, team in zip(range(start, stop), teams)), batch_size=2000)


def measure(client, url: str, rounds: int) -> tuple[float, int]:
    """Median seconds per request, and SQL statements per request."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert client.get(url).status_code == 200  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return statistics.median(times), len(queries.captured_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudctl-bench-dashboard-") as state_dir:
        setup_django(state_dir)
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.test import Client

        from tests.staff import force_staff_login

        client = Client()
        user = get_user_model().objects.create_user("bench", is_staff=True)
        user.groups.add(Group.objects.get(name="Fleet viewer"))  # staff alone may not see the fleet
        force_staff_login(client, user)
        results = {}
        seeded = 0
        for size in SIZES:
            started = time.perf_counter()
            seed(seeded, size)
            seeded = size
            print(f"seeded {size:,} teams in {time.perf_counter() - started:.1f} s", flush=True)
            results[size] = {name: measure(client, url, args.rounds) for name, url in VIEWS.items()}

        small, large = SIZES
        print(f"\nteam list, {settings.DASHBOARD_PAGE_SIZE} per page, median of {args.rounds} requests")
        print(f"{'view':14} {f'{small:,} teams':>16} {f'{large:,} teams':>16}  queries")
        for name in VIEWS:
            (t_small, q_small), (t_large, q_large) = results[small][name], results[large][name]
            print(f"{name:14} {t_small * 1000:13.1f} ms {t_large * 1000:13.1f} ms  {q_small} / {q_large}")
        ratio = results[large]["list"][0] / results[small]["list"][0]
        print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
