"""Configuration errors surface at `manage.py check` (and every start), not at the first deploy.

The check ids keep the `teams.` prefix they had before deploys became an app: a SILENCED_SYSTEM_CHECKS entry
naming one still works."""

import re

from django.conf import settings
from django.core import checks

from .selectors import allowed_image_prefixes

# The start of an image reference: registry host, repository path, then a tag (`:`) or digest (`@`).
IMAGE_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]*")
# Where an image reference may be cut: anything else lets a look-alike repository through
# (`registry.fly.io/cloudctl-team` would accept `registry.fly.io/cloudctl-team-evil:1`).
BOUNDARIES = (":", "@", "/")


@checks.register()
def image_prefixes(app_configs, **kwargs):
    errors = []
    for prefix in settings.ALLOWED_IMAGE_PREFIXES:
        if not IMAGE_PREFIX.fullmatch(prefix):
            errors.append(checks.Error(
                f"CLOUDCTL_ALLOWED_IMAGE_PREFIXES: {prefix!r} is not the start of an image reference.",
                hint="Comma-separated, no spaces, e.g. registry.fly.io/cloudctl-team:", id="teams.E001"))
        elif not prefix.endswith(BOUNDARIES):
            errors.append(checks.Error(
                f"CLOUDCTL_ALLOWED_IMAGE_PREFIXES: {prefix!r} would also accept {prefix}-anything.",
                hint="End it with ':' (one repository's tags), '@' (its digests) or '/' (a namespace).",
                id="teams.E002"))
    return errors


@checks.register(checks.Tags.security, deploy=True)
def image_prefixes_chosen(app_configs, **kwargs):
    defaults = None if settings.ALLOWED_IMAGE_PREFIXES else allowed_image_prefixes()
    if defaults is not None:
        return [checks.Warning(
            "CLOUDCTL_ALLOWED_IMAGE_PREFIXES is not set: deploys accept "
            + (f"only images starting with {', '.join(defaults)}" if defaults else "no image") + ".",
            hint="Name the repositories whose images may run with every team's token, e.g. "
                 "registry.fly.io/cloudctl-team:", id="teams.W001")]
    return []
