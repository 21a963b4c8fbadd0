"""What a restore's preview shows (issue 16): its tables, their row counts and first rows, read by the control plane
from the preview's Datasette JSON API on the platform's private network, with the restore's preview secret.

The preview runs the team's restored data, so it is treated as hostile like any instance: bounded answers, a short
timeout, only the JSON shapes read here (anything else is "unavailable"), every value rendered as text by the
pages that show it."""

import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from .models import Restore
from .restore import preview_secret

PREVIEW_HEADER = "X-Cloudctl-Preview"
TIMEOUT_SECONDS = 5
# A page waits at most this long for all of a preview's answers, however many tables it lists.
BUDGET_SECONDS = 10
MAX_ANSWER_BYTES = 2_000_000
MAX_TABLES = 50
SHOWN_ROWS = 20


class PreviewUnavailable(Exception):
    """The preview did not answer as a preview should; the message is safe to show."""


@dataclass(frozen=True)
class PreviewTable:
    name: str
    count: int
    columns: list[str]
    rows: list[list[str]]  # each value as text


def preview_tables(restore: Restore, *, rows: int = SHOWN_ROWS) -> list[PreviewTable]:
    """The preview's tables (at most MAX_TABLES), each with its row count and first `rows` rows."""
    if restore.state != Restore.State.PREVIEW_RUNNING or not restore.preview_url:
        raise PreviewUnavailable(f"{restore} has no running preview")
    database = quote(restore.database.removesuffix(".db"))
    base = restore.preview_url.rstrip("/")
    with httpx.Client(timeout=TIMEOUT_SECONDS, headers={PREVIEW_HEADER: preview_secret(restore)},
                      follow_redirects=False) as client:
        listing = _json(client, f"{base}/{database}.json")
        tables = listing.get("tables") if isinstance(listing, dict) else None
        if not isinstance(tables, list):
            raise PreviewUnavailable("the preview's answer lists no tables")
        shown = []
        deadline = time.monotonic() + BUDGET_SECONDS
        for table in tables[:MAX_TABLES]:
            if time.monotonic() > deadline:
                raise PreviewUnavailable(f"the preview answered too slowly (over {BUDGET_SECONDS} s)")
            if not isinstance(table, dict) or not isinstance(table.get("name"), str) or table.get("hidden"):
                continue
            name = table["name"]
            page = _json(client, f"{base}/{database}/{quote(name, safe='')}.json?_size={rows}")
            found = page.get("rows") if isinstance(page, dict) else None
            if not isinstance(found, list):
                raise PreviewUnavailable(f"the preview's answer for table {name!r} has no rows")
            columns = table.get("columns") or []
            if not isinstance(columns, list):
                raise PreviewUnavailable(f"the preview's columns of table {name!r} are not a list")
            columns = [str(column) for column in columns]
            shown.append(PreviewTable(
                name=name, count=_count(table), columns=columns,
                rows=[[str(row.get(column, "")) for column in columns] for row in found[:rows] if isinstance(row, dict)]))
        return shown


def _count(table: dict) -> int:
    """The table's row count as Datasette lists it (a number; none for a table it did not count)."""
    count = table.get("count") or 0
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    if isinstance(count, str) and count.isdecimal():
        return int(count)
    raise PreviewUnavailable(f"the preview's count for table {table['name']!r} is not a number")


def _json(client: httpx.Client, url: str):
    try:
        with client.stream("GET", url) as answer:
            if answer.status_code != 200:
                raise PreviewUnavailable(f"the preview answered HTTP {answer.status_code}")
            body = b""
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise PreviewUnavailable("the preview's answer is too large")
        return httpx.Response(200, content=body).json()
    except httpx.HTTPError as error:
        raise PreviewUnavailable(f"the preview did not answer: {type(error).__name__}") from None
    except ValueError:
        raise PreviewUnavailable("the preview's answer is not JSON") from None
