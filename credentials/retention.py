"""Keeping the audit trail bounded and its counters cheap.

The metrics export how many requests the private API issued and refused, by kind, reason and signal. Counting
them from the audit rows at every scrape would cost more as the table grows, and pruning old rows would make
those counters go backwards. So rows are folded into `CredentialEventTotal` up to a watermark (the id of the last
row counted), advanced at each scrape and before each prune; a scrape adds only the rows above the watermark.
Pruning deletes only rows below it, so the totals never lose a request.

A row is folded in only once it has settled: a throttled row keeps counting requests during its minute
(credentials.audit.THROTTLED), so rows younger than SETTLE stay above the watermark and are counted live.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Min, Sum
from django.utils import timezone

from .models import CredentialEvent, CredentialEventTotal, CredentialEventWatermark

# Longer than a throttled row's minute, plus slack for clocks and requests in flight.
SETTLE = timedelta(minutes=2)
# Rows deleted per statement, and rows folded into the totals per transaction: SQLite holds its write lock
# meanwhile, and exchanges must not wait long (a first scrape after this migration meets the whole table).
PRUNE_BATCH = 5000
ADVANCE_BATCH = 50_000

Key = tuple[str, str, str]


def _requests_by_key(rows) -> dict[Key, int]:
    return {(kind, reason, signal): n for kind, reason, signal, n in
            rows.order_by().values_list("kind", "reason", "signal").annotate(n=Sum("request_count"))}


def _locked_watermark() -> CredentialEventWatermark:
    return CredentialEventWatermark.objects.select_for_update().get_or_create(pk=1)[0]


def _advance(watermark: CredentialEventWatermark, now) -> bool:
    """Fold settled rows above the watermark into the totals, at most ADVANCE_BATCH of them (the watermark row
    is locked by the caller); returns whether it moved. Its cost is that of the rows added since the last
    advance, whatever the size of the table."""
    above = CredentialEvent.objects.filter(pk__gt=watermark.last_event_id)
    settled_before = now - SETTLE
    settled = above.filter(created_at__lt=settled_before)
    first_unsettled = above.filter(created_at__gte=settled_before).aggregate(first=Min("pk"))["first"]
    if first_unsettled is not None:
        # Ids and times are only nearly in step across processes: stop below the first row still settling.
        settled = settled.filter(pk__lt=first_unsettled)
    batch_end = list(settled.order_by("pk").values_list("pk", flat=True)[ADVANCE_BATCH - 1:ADVANCE_BATCH])
    last = batch_end[0] if batch_end else settled.aggregate(last=Max("pk"))["last"]
    if last is None:
        return False
    for (kind, reason, signal), requests in _requests_by_key(settled.filter(pk__lte=last)).items():
        total, _ = CredentialEventTotal.objects.get_or_create(kind=kind, reason=reason, signal=signal)
        CredentialEventTotal.objects.filter(pk=total.pk).update(requests=F("requests") + requests)
    watermark.last_event_id = last
    watermark.save(update_fields=["last_event_id"])
    return True


def advance_totals(now=None) -> int:
    """Fold every settled row into the totals, a transaction per batch; returns the watermark."""
    now = now or timezone.now()
    while True:
        with transaction.atomic():
            watermark = _locked_watermark()
            if not _advance(watermark, now):
                return watermark.last_event_id


def credential_event_totals(now=None) -> dict[Key, int]:
    """Requests ever recorded by the private API per (kind, reason, signal), pruned ones included: the totals
    up to the watermark (advanced by a batch first) plus the rows above it, read under the watermark's lock so
    that a concurrent advance neither counts a row twice nor misses one."""
    with transaction.atomic():
        watermark = _locked_watermark()
        _advance(watermark, now or timezone.now())
        totals = {(total.kind, total.reason, total.signal): total.requests
                  for total in CredentialEventTotal.objects.all()}
        for key, requests in _requests_by_key(
                CredentialEvent.objects.filter(pk__gt=watermark.last_event_id)).items():
            totals[key] = totals.get(key, 0) + requests
    return totals


def retention() -> timedelta:
    return timedelta(days=settings.AUDIT_RETENTION_DAYS)


def prune_credential_events(now=None) -> int:
    """Delete audit rows older than CLOUDCTL_AUDIT_RETENTION_DAYS, counted into the totals first; returns how
    many. The system check keeps the retention above every rate limit's window, which counts recent rows."""
    now = now or timezone.now()
    expired = CredentialEvent.objects.filter(pk__lte=advance_totals(now), created_at__lt=now - retention())
    pruned = 0
    while batch := list(expired.order_by("pk").values_list("pk", flat=True)[:PRUNE_BATCH]):
        pruned += CredentialEvent.objects.filter(pk__in=batch).delete()[0]
    return pruned
