"""Staff accounts as the login rules require them: a password, and TOTP enrolled (CLOUDCTL_STAFF_REQUIRE_2FA)."""

import time

from allauth.account.internal.flows.login import record_authentication
from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, hotp_value
from django.http import HttpRequest

PASSWORD = "pw-123456789"
# Every test account enrolls the same authenticator app.
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def with_totp(user):
    """`user` with TOTP enrolled (what the activation page does, without its form)."""
    TOTP.activate(user, TOTP_SECRET)
    return user


def totp_code(secret: str = TOTP_SECRET) -> str:
    """The code an authenticator app shows now for `secret` (RFC 6238, what allauth checks)."""
    return format_hotp_value(hotp_value(secret, int(time.time()) // mfa_settings.TOTP_PERIOD))


def force_staff_login(client, user) -> None:
    """`client.force_login` for staff: enrolls TOTP and marks the session as having passed it, as a real sign-in
    through the TOTP step does (tests/test_login_security.py signs in for real)."""
    if not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists():
        with_totp(user)
    client.force_login(user)
    session = client.session
    request = HttpRequest()
    request.session = session
    record_authentication(request, user, "mfa", type=Authenticator.Type.TOTP)
    session.save()
