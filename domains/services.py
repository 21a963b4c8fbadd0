"""The teams' wildcard certificate through Fly's certificates API: request it (adopting one the router app
already has), check it, wait until it is active. Every read of Fly is recorded in `domains.models.Certificate`,
which is what the dashboard shows (it never calls Fly itself).

The certificate lives on the router app (CLOUDCTL_ROUTER_FLY_APP), the one app with public IPs; the control
plane's Fly token asks for it, the router itself never holds that token. On the local backend there is nothing
to certify: teams are at http://<slug>.localhost:<port>/.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime

from django.conf import settings
from django.utils import timezone

import flyapi
from flyapi import FlyAPIError, FlyClient
from instances.machines import get_backend

from .models import Certificate

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class CertificatesDoNotApply(Exception):
    """The machine backend is not Fly: there is no router app to hold a certificate."""


class CertificateCheckFailed(Exception):
    """Fly could not be asked (its answer's message; never the token)."""


def certificates_apply() -> bool:
    return get_backend().issues_certificates


def wildcard_hostname(domain: str) -> str:
    """`*.<domain>` for `domain` or `*.domain` (any case, a trailing dot allowed); ValueError if it is no domain."""
    name = domain.strip().lower().removesuffix(".").removeprefix("*.")
    labels = name.split(".")
    if len(name) > 251 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{domain!r} is not a domain name (for example teams.example.com)")
    return f"*.{name}"


def teams_hostname() -> str:
    """The hostname the router serves teams under: `*.CLOUDCTL_TEAMS_DOMAIN`."""
    return wildcard_hostname(settings.TEAMS_DOMAIN)


def request_certificate(domain: str, *, actor: str) -> tuple[Certificate, bool]:
    """Asks Fly for `*.<domain>` on the router app, or adopts the one it already has (re-running is safe).
    Returns the recorded certificate and whether it was adopted."""
    hostname = wildcard_hostname(domain)
    client, app = _fly_client(), settings.ROUTER_FLY_APP
    with _fly_failures(f"requesting the certificate for {hostname} on {app}"):
        existing = client.get_certificate(app, hostname)
        answer = existing or client.request_certificate(app, hostname)
    logger.info("certificate %s on %s %s by %s", hostname, app, "adopted" if existing else "requested", actor)
    return _record(answer, app=app, actor=actor), existing is not None


def check_certificate(hostname: str, *, actor: str) -> Certificate:
    """Asks Fly to validate `hostname` now and records what it answers (MISSING when the app no longer has it)."""
    client, app = _fly_client(), settings.ROUTER_FLY_APP
    try:
        answer = client.check_certificate(app, hostname)
    except FlyAPIError as error:
        if error.http_status == 404:
            Certificate.objects.filter(hostname=hostname).update(
                status=Certificate.MISSING, checked_at=timezone.now(), checked_by=actor, check_failure="")
            return Certificate.objects.get(hostname=hostname)
        failure = f"checking the certificate for {hostname} on {app}: {error}"
        Certificate.objects.filter(hostname=hostname).update(checked_at=timezone.now(), checked_by=actor,
                                                             check_failure=failure)
        raise CertificateCheckFailed(failure) from None
    return _record(answer, app=app, actor=actor)


def wait_until_active(hostname: str, *, actor: str, timeout: float, interval: float,
                      on_check: Callable[[Certificate], None]) -> Certificate:
    """Checks `hostname` every `interval` seconds until it is active or `timeout` seconds have passed, calling
    `on_check` with each recorded state; returns the last one (not active when the time ran out). On the Fly
    client's clock, so tests run it on virtual time."""
    client = _fly_client()
    deadline = client.clock() + timeout
    while True:
        certificate = check_certificate(hostname, actor=actor)
        on_check(certificate)
        remaining = deadline - client.clock()
        if certificate.active or remaining <= 0:
            return certificate
        client.sleep(min(interval, remaining))


def check_certificates(*, actor: str) -> list[Certificate]:
    """The periodic check: every certificate recorded for the router app, asked of Fly again. One that cannot
    be read keeps its last state with the failure recorded; the others are still checked."""
    if not certificates_apply():
        return []
    checked = []
    for hostname in Certificate.objects.filter(app=settings.ROUTER_FLY_APP).values_list("hostname", flat=True):
        try:
            checked.append(check_certificate(hostname, actor=actor))
        except CertificateCheckFailed as failure:
            logger.warning("%s", failure)
    return checked


def _fly_client() -> FlyClient:
    try:
        return get_backend().certificates_client()
    except NotImplementedError:
        raise CertificatesDoNotApply(
            f"certificates apply to the Fly backend only (CLOUDCTL_MACHINE_BACKEND is {settings.MACHINE_BACKEND}): "
            "on the local backend teams are served at http://<slug>.localhost:<port>/") from None


@contextmanager
def _fly_failures(doing: str):
    """Raise a failed Fly call inside as CertificateCheckFailed, saying what was being done."""
    try:
        yield
    except FlyAPIError as error:
        raise CertificateCheckFailed(f"{doing}: {error}") from None


def _record(answer: flyapi.Certificate, *, app: str, actor: str) -> Certificate:
    state = {
        "app": app,
        "status": answer.status,
        "dns_records": [asdict(record) for record in answer.dns_records],
        "validation_errors": [asdict(error) for error in answer.validation_errors],
        "expires_at": datetime.fromisoformat(answer.expires_at) if answer.expires_at else None,
        "checked_at": timezone.now(),
        "checked_by": actor,
        "check_failure": "",
    }
    certificate, _ = Certificate.objects.update_or_create(
        hostname=answer.hostname, defaults=state, create_defaults={**state, "requested_by": actor})
    return certificate
