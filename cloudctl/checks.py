"""Sign-in settings checked at `manage.py check` (and every start), not at the first sign-in."""

from django.apps import apps
from django.conf import settings
from django.core import checks

LOCK_KINDS = {"ip", "key"}


@checks.register(checks.Tags.security)
def login_rate_limit(app_configs, **kwargs):
    if not apps.is_installed("allauth.account"):
        return []  # the private API's process: no sign-in
    from allauth.core.internal.ratelimit import parse_rates

    value = settings.ACCOUNT_RATE_LIMITS["login_failed"]
    try:
        kinds = {rate.per for rate in parse_rates(value)}
    except ValueError:
        kinds = set()
    if kinds != LOCK_KINDS:
        return [checks.Error(
            f"CLOUDCTL_LOGIN_FAILED_RATE_LIMIT {value!r} must be one limit per address and one per account, "
            "like 20/15m/ip,5/15m/key.", id="cloudctl.E001")]
    return []
