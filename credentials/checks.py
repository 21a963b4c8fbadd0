"""Configuration errors surface at `manage.py check` (and every start), not at a team's first exchange."""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .policy import BUCKET_NAME
from .ratelimit import RateLimit

# AssumeRole's bounds for DurationSeconds.
MIN_TTL, MAX_TTL = 900, 43200


@checks.register()
def credentials_settings(app_configs, **kwargs):
    errors = []
    if not MIN_TTL <= settings.CREDENTIALS_TTL <= MAX_TTL:
        errors.append(checks.Error(
            f"CLOUDCTL_CREDENTIALS_TTL is {settings.CREDENTIALS_TTL}; STS accepts {MIN_TTL} to {MAX_TTL} seconds.",
            id="credentials.E001"))
    for name in ("TEAM_RATE_LIMIT", "BAD_TOKEN_RATE_LIMIT"):
        try:
            RateLimit.parse(getattr(settings, name))
        except ImproperlyConfigured as error:
            errors.append(checks.Error(f"CLOUDCTL_{name}: {error}", id="credentials.E002"))
    if not BUCKET_NAME.fullmatch(settings.BACKUP_BUCKET):
        errors.append(checks.Error(f"CLOUDCTL_BACKUP_BUCKET {settings.BACKUP_BUCKET!r} is not a bucket name.",
                                   id="credentials.E003"))
    if not settings.BACKUP_ROLE_ARN:
        errors.append(checks.Warning(
            "CLOUDCTL_BACKUP_ROLE_ARN is not set: the private API answers 503 to every exchange.",
            hint="`make dev` sets it for the local S3/STS; production sets the role's ARN.", id="credentials.W001"))
    return errors
