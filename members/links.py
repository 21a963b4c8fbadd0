"""An invitation link followed while signed out, remembered in the session until its holder has signed up or in:
sign-up is then open to them even when it is by invitation only (`cloudctl.accounts.AccountAdapter`), and the
invited address counts as verified if they sign up with it (the link reached them at that address)."""

from allauth.account.adapter import get_adapter
from django.utils import timezone

from .models import Invitation

SESSION_KEY = "members.invitation"


def remember_invitation(request, invitation: Invitation) -> None:
    # The invitation's id, never its key: the session's data is stored in clear.
    request.session[SESSION_KEY] = invitation.pk
    get_adapter(request).stash_verified_email(request, invitation.email)


def remembered_invitation(request) -> Invitation | None:
    """The invitation this session followed a link to, while it is still pending."""
    invitation_id = request.session.get(SESSION_KEY)
    invitation = Invitation.objects.filter(pk=invitation_id).first() if invitation_id else None
    return invitation if invitation and invitation.is_pending(timezone.now()) else None
