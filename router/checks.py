"""The router's settings, checked at `manage.py check` (and every start)."""

from django.conf import settings
from django.core import checks

# Fly replays a request body of at most 1 MB (its dynamic request routing docs).
FLY_REPLAY_LIMIT = 1_000_000


@checks.register()
def router_settings(app_configs, **kwargs):
    errors = []
    if not 0 < settings.ROUTER_TABLE_MAX_AGE <= 1:
        errors.append(checks.Error(
            f"CLOUDCTL_ROUTER_TABLE_MAX_AGE ({settings.ROUTER_TABLE_MAX_AGE}) must be above 0 and at most 1: a "
            "change to a team must reach the router within a second.", id="router.E001"))
    if not 0 <= settings.ROUTER_REPLAY_MAX_BODY <= FLY_REPLAY_LIMIT:
        errors.append(checks.Error(
            f"CLOUDCTL_ROUTER_REPLAY_MAX_BODY ({settings.ROUTER_REPLAY_MAX_BODY}) must be between 0 and "
            f"{FLY_REPLAY_LIMIT}: Fly replays no larger body.", id="router.E002"))
    if settings.ROUTER_WAKE_TIMEOUT <= 0:
        errors.append(checks.Error("CLOUDCTL_ROUTER_WAKE_TIMEOUT must be above 0.", id="router.E003"))
    cookie_domain = (settings.SESSION_COOKIE_DOMAIN or "").lstrip(".").lower()
    teams_domain = settings.TEAMS_DOMAIN.lower()
    if cookie_domain and (teams_domain == cookie_domain or teams_domain.endswith("." + cookie_domain)):
        errors.append(checks.Warning(
            f"SESSION_COOKIE_DOMAIN ({settings.SESSION_COOKIE_DOMAIN}) covers the teams' domain ({teams_domain}): "
            "browsers send the control plane's session to every team's name. The router drops such requests' "
            "cookies, which also drops the team's own.", id="router.W001"))
    return errors
