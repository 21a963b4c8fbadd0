"""What members' services refuse, beyond Django's PermissionDenied (403: the role does not allow it) and
ValidationError (400: bad input). Views and JSON endpoints map each to its status."""

from django.core.exceptions import PermissionDenied, ValidationError


class NotAMember(Exception):
    """The user is not a member of that team (or there is no such team, member or invitation): a 404, so nobody
    learns which teams exist."""


class Conflict(ValidationError):
    """The request is well formed and allowed, but the team's state refuses it (the last owner leaving, an address
    already invited): a 409."""


class TooManyInvitations(Conflict):
    """The account mailed its hourly allowance of invitations (CLOUDCTL_INVITATIONS_PER_HOUR): a 429."""


class InvalidInvitation(ValidationError):
    """An invitation link that is unknown, used, revoked, replaced by a resend or expired."""


def status_for(error: Exception) -> int:
    """The HTTP status a refusal answers with, on pages and JSON endpoints alike."""
    if isinstance(error, NotAMember):
        return 404
    if isinstance(error, PermissionDenied):
        return 403
    if isinstance(error, TooManyInvitations):
        return 429
    if isinstance(error, Conflict):
        return 409
    return 400


def messages_of(error: Exception) -> list[str]:
    return error.messages if isinstance(error, ValidationError) else [str(error) or "Not allowed."]


# What pages and JSON endpoints turn into a 4xx (anything else is a bug: a 500).
REFUSALS = (NotAMember, PermissionDenied, ValidationError)
