"""Project settings checked at `manage.py check` (and every start; the release command's migrate runs them too),
not at the first sign-in or the first slow client."""

import os

from django.apps import apps
from django.conf import settings
from django.core import checks

from .schedule import interval_problems

LOCK_KINDS = {"ip", "key"}
# CLOUDCTL_SIGNUP: anyone may sign up, or only someone who followed a pending invitation's link.
SIGNUP_MODES = ("open", "invitation")


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


@checks.register()
def server_settings(app_configs, **kwargs):
    """The private API's server (cloudctl.server)."""
    errors = []
    for name in ("SERVER_HEADER_TIMEOUT", "SERVER_BODY_TIMEOUT", "SERVER_THREADS"):
        if getattr(settings, name) <= 0:
            errors.append(checks.Error(f"CLOUDCTL_{name} must be above 0 (it is {getattr(settings, name)}).",
                                       id="cloudctl.E002"))
    if settings.SERVER_CONNECTIONS_PER_SOURCE < 0:
        errors.append(checks.Error("CLOUDCTL_SERVER_CONNECTIONS_PER_SOURCE must be 0 (no cap) or more.",
                                   id="cloudctl.E002"))
    if settings.SERVER_MAX_BODY < settings.PRIVATE_API_MAX_BODY:
        errors.append(checks.Error(
            f"CLOUDCTL_SERVER_MAX_BODY ({settings.SERVER_MAX_BODY}) is below CLOUDCTL_PRIVATE_API_MAX_BODY "
            f"({settings.PRIVATE_API_MAX_BODY}): the server would refuse bodies the private API accepts.",
            id="cloudctl.E003"))
    return errors


@checks.register()
def periodic_intervals(app_configs, **kwargs):
    """The periodic tasks' intervals (cloudctl/schedule.py)."""
    return [checks.Error(f"{problem}.", id="cloudctl.E004") for problem in interval_problems()]


@checks.register()
def signup_mode(app_configs, **kwargs):
    if settings.SIGNUP_MODE not in SIGNUP_MODES:
        return [checks.Error(f"CLOUDCTL_SIGNUP {settings.SIGNUP_MODE!r} is not one of {', '.join(SIGNUP_MODES)}: "
                             "'open' lets anyone sign up, 'invitation' only someone following an invitation link.",
                             id="cloudctl.E005")]
    return []


@checks.register(checks.Tags.security, deploy=True)
def fleet_shared_settings(app_configs, **kwargs):
    """Each setting a deployment's machines must share (settings.FLEET_SHARED_SETTINGS) is set in the environment.
    The environment is read, not the settings: a generated fallback looks like any other value there."""
    return [checks.Error(
        f"{name} is not set (or empty): each machine falls back to a value of its own (a secret generated into its "
        "state dir, a SQLite database there), so the machines of one deployment disagree on it.",
        hint=f"Set {name} to the same value on every control-plane machine (fly secrets set; fly.toml lists them).",
        id="cloudctl.E006") for name in settings.FLEET_SHARED_SETTINGS if not os.environ.get(name, "").strip()]
