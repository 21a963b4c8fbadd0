"""Member accounts as a sign-up leaves them: an email address, verified (allauth's EmailAddress), a password."""

import re

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model

from .staff import PASSWORD


def make_member(email: str, *, verified: bool = True):
    user = get_user_model().objects.create_user(email.split("@")[0], email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=verified, primary=True)
    return user


def invitation_key(message) -> str:
    """The key of the invitation link in a mail (the only place it exists in clear)."""
    return re.search(r"/invitation/\?key=([A-Za-z0-9_-]+)", message.body).group(1)
