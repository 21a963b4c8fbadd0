"""Who holds a lease: `host:pid:random`, so a lease left by a killed process on this host can be taken over.

Rows that one run at a time may work on (an instance being provisioned, a deployment being run) carry
`claimed_by` and `claimed_until`; `claim_row` and `release_row` take and give back that claim.
"""

import os
import socket
import uuid
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_gone(holder: str) -> bool:
    """True when the holder was a process on this host that no longer exists (a killed worker)."""
    host, _, rest = holder.partition(":")
    pid = rest.split(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_row(rows: QuerySet, duration: timedelta) -> tuple[str | None, str]:
    """Atomically claim the one row in `rows` if it is free: never claimed, expired, or held by a process of
    this host that died. Returns (the new owner, or None when a live run holds it; the holder seen)."""
    owner = new_holder()
    now = timezone.now()
    free = Q(claimed_by="") | Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    holder = rows.values_list("claimed_by", flat=True).first() or ""
    if holder and holder_is_gone(holder):
        free |= Q(claimed_by=holder)
    return (owner if rows.filter(free).update(claimed_by=owner, claimed_until=now + duration) else None), holder


def release_row(rows: QuerySet, owner: str) -> None:
    rows.filter(claimed_by=owner).update(claimed_by="", claimed_until=None)


def claim_is_live(holder: str, until: datetime | None) -> bool:
    """Whether a run still holds a row's claim (the test `claim_row` makes, without taking it)."""
    return bool(holder) and until is not None and until >= timezone.now() and not holder_is_gone(holder)
