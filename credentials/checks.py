"""Configuration errors surface at `manage.py check` (and every start), not at a team's first exchange."""

import ipaddress

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .policy import BUCKET_NAME
from .ratelimit import RateLimit
from .retention import SETTLE

# AssumeRole's bounds for DurationSeconds.
MIN_TTL, MAX_TTL = 900, 43200


@checks.register()
def credentials_settings(app_configs, **kwargs):
    errors = []
    if not MIN_TTL <= settings.CREDENTIALS_TTL <= MAX_TTL:
        errors.append(checks.Error(
            f"CLOUDCTL_CREDENTIALS_TTL is {settings.CREDENTIALS_TTL}; STS accepts {MIN_TTL} to {MAX_TTL} seconds.",
            id="credentials.E001"))
    windows = [SETTLE.total_seconds()]
    for name in ("TEAM_RATE_LIMIT", "BAD_TOKEN_RATE_LIMIT"):
        try:
            windows.append(RateLimit.parse(getattr(settings, name)).seconds)
        except ImproperlyConfigured as error:
            errors.append(checks.Error(f"CLOUDCTL_{name}: {error}", id="credentials.E002"))
    # The rate limits count recent audit rows: pruning must never reach into their windows.
    if settings.AUDIT_RETENTION_DAYS < 1 or settings.AUDIT_RETENTION_DAYS * 86400 <= max(windows):
        errors.append(checks.Error(
            f"CLOUDCTL_AUDIT_RETENTION_DAYS is {settings.AUDIT_RETENTION_DAYS}; it must be at least 1 day and "
            f"longer than the longest rate limit window ({max(windows):g} s).", id="credentials.E004"))
    errors += _proxy_errors()
    if not BUCKET_NAME.fullmatch(settings.BACKUP_BUCKET):
        errors.append(checks.Error(f"CLOUDCTL_BACKUP_BUCKET {settings.BACKUP_BUCKET!r} is not a bucket name.",
                                   id="credentials.E003"))
    if not settings.BACKUP_ROLE_ARN:
        errors.append(checks.Warning(
            "CLOUDCTL_BACKUP_ROLE_ARN is not set: the private API answers 503 to every exchange.",
            hint="`make dev` sets it for the local S3/STS; production sets the role's ARN.", id="credentials.W001"))
    return errors


def _proxy_errors() -> list[checks.CheckMessage]:
    errors = []
    for cidr in settings.TRUSTED_PROXIES:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            errors.append(checks.Error(f"CLOUDCTL_TRUSTED_PROXIES: {cidr!r} is not an address or CIDR network.",
                                       id="credentials.E005"))
    if settings.CLIENT_IP_HEADER and not settings.TRUSTED_PROXIES:
        errors.append(checks.Warning(
            f"CLOUDCTL_CLIENT_IP_HEADER is {settings.CLIENT_IP_HEADER!r} but CLOUDCTL_TRUSTED_PROXIES is empty: "
            "the header is ignored and every request is counted under its connecting address.",
            hint="Set CLOUDCTL_TRUSTED_PROXIES to the proxies' addresses (CIDRs), or unset the header.",
            id="credentials.W002"))
    return errors
