"""`manage.py check --deploy`: no control-plane cookie may ever reach a team's host (docs/sso.md)."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from publicsuffixlist import PublicSuffixList

COOKIE_DOMAIN_SETTINGS = ("SESSION_COOKIE_DOMAIN", "CSRF_COOKIE_DOMAIN")


# docs/sso.md §4: a removal, role change, deactivation or sign-out reaches every instance within this.
LONGEST_REVALIDATION = 60


@checks.register()
def revalidation_interval(app_configs, **kwargs):
    if not 1 <= settings.SSO_REVALIDATE_SECONDS <= LONGEST_REVALIDATION:
        return [checks.Error(
            f"CLOUDCTL_SSO_REVALIDATE_SECONDS ({settings.SSO_REVALIDATE_SECONDS}) must be between 1 and "
            f"{LONGEST_REVALIDATION}: how long an instance may act on a role the control plane took back.",
            id="sso.E003")]
    return []


def _is_within(host: str, domain: str) -> bool:
    return host == domain or host.endswith(f".{domain}")


@checks.register(checks.Tags.security, deploy=True)
def control_plane_cookies_stay_home(app_configs, **kwargs):
    """Errors when a team's host could receive the control plane's cookies (a cookie domain covering the teams'
    hosts, or the control plane's host being the teams' domain or under it, so that a team's slug could name it);
    a warning when both share a registrable domain (a team's host can still set cookies on the shared parent)."""
    public_host = (urlsplit(settings.PUBLIC_URL).hostname or "").lower().rstrip(".")
    teams_domain = settings.TEAMS_DOMAIN.lower().strip(".")
    problems = []
    if _is_within(public_host, teams_domain):
        problems.append(checks.Error(
            f"CLOUDCTL_PUBLIC_URL's host {public_host!r} is CLOUDCTL_TEAMS_DOMAIN {teams_domain!r} or under it: "
            "team hosts would share the control plane's host or its cookies.",
            hint="Serve the control plane from a host outside the teams' domain, ideally another registrable domain.",
            id="sso.E001"))
    for name in COOKIE_DOMAIN_SETTINGS:
        if domain := (getattr(settings, name) or "").lower().strip("."):
            reaches = " and so every team's host" if _is_within(teams_domain, domain) else ""
            problems.append(checks.Error(
                f"{name} is {domain!r}: the cookie goes to that domain's subdomains{reaches}.",
                hint="Leave it unset (None): the control plane's cookies must be host-only.", id="sso.E002"))
    if problems:
        return problems
    shared = PublicSuffixList().privatesuffix(public_host)
    if shared is not None and shared == PublicSuffixList().privatesuffix(teams_domain):
        return [checks.Warning(
            f"The control plane ({public_host}) and the teams ({teams_domain}) share the registrable domain "
            f"{shared!r}: a team's code can set cookies for {shared!r}, which browsers send to the control plane.",
            hint="Serve the teams from a separate registrable domain (its cookies then never meet the control "
                 "plane's); the __Host- cookie names (CLOUDCTL_HTTPS) keep them from overwriting the session.",
            id="sso.W001")]
    return []
