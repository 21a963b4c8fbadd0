"""What the dashboard shows about the teams' certificate, read from the database only (never from Fly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from teams.routing import team_url

from .models import Certificate
from .services import certificates_apply, teams_hostname

# Fewer days than this to the expiry and the dashboard shouts (Let's Encrypt's certificates last 90 days and Fly
# renews them about 30 days ahead: one this close has failed to renew).
EXPIRY_WARNING = timedelta(days=14)


@dataclass(frozen=True)
class CertificateStatus:
    applies: bool  # False on the local backend: teams are at `local_url`, over plain HTTP
    hostname: str
    certificate: Certificate | None  # None until requested
    days_left: int | None
    problems: list[str] = field(default_factory=list)  # each one shouted
    local_url: str = ""


def certificate_status(now: datetime | None = None) -> CertificateStatus:
    if not certificates_apply():
        return CertificateStatus(applies=False, hostname="", certificate=None, days_left=None,
                                 local_url=team_url("<slug>"))
    now = now or timezone.now()
    hostname = teams_hostname()
    certificate = Certificate.objects.filter(hostname=hostname).first()
    if certificate is None:
        domain = settings.TEAMS_DOMAIN
        return CertificateStatus(applies=True, hostname=hostname, certificate=None, days_left=None, problems=[
            f"The certificate for {hostname} has not been requested yet: run `manage.py provision_domain {domain}`."])
    days_left = (certificate.expires_at - now).days if certificate.expires_at else None
    problems = [_validation_problem(error) for error in certificate.validation_errors]
    if certificate.status == Certificate.MISSING:
        problems.append(f"The router app {certificate.app} no longer has {hostname}: "
                        f"run `manage.py provision_domain {settings.TEAMS_DOMAIN}` again.")
    if certificate.expires_at and certificate.expires_at - now < EXPIRY_WARNING:
        problems.append(f"The certificate has expired ({certificate.expires_at:%Y-%m-%d %H:%M} UTC)."
                        if certificate.expires_at <= now else
                        f"The certificate expires in {days_left} days ({certificate.expires_at:%Y-%m-%d}): "
                        "Fly has not renewed it.")
    if certificate.check_failure:
        problems.append(f"The last check could not read Fly: {certificate.check_failure}")
    return CertificateStatus(applies=True, hostname=hostname, certificate=certificate, days_left=days_left,
                             problems=problems)


def _validation_problem(error: dict) -> str:
    code = f" ({error['code']})" if error.get("code") else ""
    remediation = f"; {error['remediation']}" if error.get("remediation") else ""
    return f"Validation error{code}: {error['message']}{remediation}"
