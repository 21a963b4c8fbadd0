"""Rate limits for the private API, counted from the audit trail.

Counting audit rows needs no extra infrastructure and is shared by every process and worker that writes
the same database, which an in-process counter would not be.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from instances.models import Instance
from teams.models import Team

from .models import CredentialEvent

Reason = CredentialEvent.Reason
# Only these count against an address: a good token from a busy address never does.
# Bad signal URLs count too (same reasons, plus another team's value).
BAD_TOKEN_REASONS = [Reason.MALFORMED, Reason.BAD_SIGNATURE, Reason.BAD_PAYLOAD, Reason.UNKNOWN_TEAM, Reason.REVOKED,
                     Reason.WRONG_TEAM]


@dataclass(frozen=True)
class RateLimit:
    count: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> "RateLimit":
        """`"<count>/<seconds>"`, e.g. `"30/3600"`."""
        try:
            count, seconds = (int(part) for part in text.split("/"))
        except ValueError:
            raise ImproperlyConfigured(f"rate limit {text!r} is not '<count>/<seconds>'") from None
        if count < 1 or seconds < 1:
            raise ImproperlyConfigured(f"rate limit {text!r} must have a positive count and window")
        return cls(count, seconds)

    def window_start(self):
        return timezone.now() - timedelta(seconds=self.seconds)


def team_limit() -> RateLimit:
    return RateLimit.parse(settings.TEAM_RATE_LIMIT)


def address_limit() -> RateLimit:
    return RateLimit.parse(settings.BAD_TOKEN_RATE_LIMIT)


# What an exchange needs of the team; the other fields stay deferred.
EXCHANGE_FIELDS = ("id", "slug", "status", "token_generation")


class TeamForExchange(NamedTuple):
    team: Team | None
    recent_requests: int
    # The boot id its instance last exchanged under ("" before any, None without an instance): a renewal of that
    # boot then records nothing, so that it takes the database's write lock for its audit row only.
    recorded_boot: str | None


def team_with_recent_requests(team_id: int) -> TeamForExchange:
    """The team, how many credentials it was issued within the team limit's window and its instance's recorded
    boot, in one statement: this runs on every exchange, and one query costs less than the team lookup, the
    count and the boot read made separately.

    Issuances only: a refusal (a stranger's forgery, the old machine's revoked token, an STS outage, the team's
    own retries at 429) never brings the team closer to its limit. The kind is written into the statement, not
    bound, so that the planner can use the partial index of issuances."""
    quote = connection.ops.quote_name
    columns = ", ".join(f"t.{quote(Team._meta.get_field(name).column)}" for name in EXCHANGE_FIELDS)
    instance = Instance._meta
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns}, (SELECT COUNT(*) FROM {CredentialEvent._meta.db_table} e "
            f"WHERE e.team_id = t.id AND e.kind = '{CredentialEvent.Kind.ISSUED.value}' AND e.created_at >= %s), "
            f"(SELECT i.{quote(instance.get_field('boot_id').column)} FROM {quote(instance.db_table)} i "
            f"WHERE i.{quote(instance.get_field('team').column)} = t.id) "
            f"FROM {Team._meta.db_table} t WHERE t.id = %s",
            [team_limit().window_start(), team_id],
        )
        row = cursor.fetchone()
    if row is None:
        return TeamForExchange(None, 0, None)
    *team_columns, recent_requests, recorded_boot = row
    return TeamForExchange(Team.from_db(connection.alias, list(EXCHANGE_FIELDS), team_columns), recent_requests,
                           recorded_boot)


def address_is_over_limit(ip: str | None) -> bool:
    """`ip` None (an address that could not be told) is one more address: those requests share a limit."""
    limit = address_limit()
    recent = CredentialEvent.objects.filter(
        client_ip=ip, reason__in=BAD_TOKEN_REASONS, created_at__gte=limit.window_start()
    )
    return recent.count() >= limit.count
