"""The private API's server settings, checked at `manage.py check` (the release command's migrate runs it too)."""

from django.conf import settings
from django.core import checks


@checks.register()
def server_settings(app_configs, **kwargs):
    errors = []
    for name in ("SERVER_HEADER_TIMEOUT", "SERVER_BODY_TIMEOUT", "SERVER_THREADS"):
        if getattr(settings, name) <= 0:
            errors.append(checks.Error(f"CLOUDCTL_{name} must be above 0 (it is {getattr(settings, name)}).",
                                       id="cloudctl.E001"))
    if settings.SERVER_CONNECTIONS_PER_SOURCE < 0:
        errors.append(checks.Error("CLOUDCTL_SERVER_CONNECTIONS_PER_SOURCE must be 0 (no cap) or more.",
                                   id="cloudctl.E001"))
    if settings.SERVER_MAX_BODY < settings.PRIVATE_API_MAX_BODY:
        errors.append(checks.Error(
            f"CLOUDCTL_SERVER_MAX_BODY ({settings.SERVER_MAX_BODY}) is below CLOUDCTL_PRIVATE_API_MAX_BODY "
            f"({settings.PRIVATE_API_MAX_BODY}): the server would refuse bodies the private API accepts.",
            id="cloudctl.E002"))
    return errors
