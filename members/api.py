"""The members' JSON endpoints (/api/...): the pages' rules and services, for programs. Session-authenticated
with Django's CSRF check (send the `csrftoken` cookie's value as `X-CSRFToken`). Every refusal is JSON:
401 signed out, 404 not a member of that team (or no such team, member or invitation), 403 the role does not
allow it, 409 the team's state refuses it (the last owner), 429 too many invitations, 400 bad input, 405 another
method."""

import json

from django.core.exceptions import ValidationError
from django.http import JsonResponse

from . import selectors, services
from .errors import REFUSALS, messages_of, status_for


def _error(status: int, messages: list[str]) -> JsonResponse:
    return JsonResponse({"error": " ".join(messages), "messages": messages}, status=status)


def endpoint(**handlers):
    """One URL's JSON endpoint: the method's handler, called with the request and the URL's arguments, its
    refusals turned into JSON 4xx. A handler returns (status, body)."""

    def respond(request, **kwargs):
        handler = handlers.get(request.method.lower())
        if handler is None:
            response = _error(405, [f"{request.method} is not allowed here: {', '.join(sorted(handlers)).upper()}."])
            response["Allow"] = ", ".join(method.upper() for method in handlers)
            return response
        if not request.user.is_authenticated:
            return _error(401, ["Sign in first (a session cookie)."])
        try:
            status, body = handler(request, **kwargs)
        except REFUSALS as error:
            return _error(status_for(error), messages_of(error))
        return JsonResponse(body, status=status, safe=False, headers={"Cache-Control": "no-store"})

    return respond


def _body(request) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("The body is not JSON.") from None
    if not isinstance(data, dict):
        raise ValidationError("The body must be a JSON object.")
    return data


def _field(data: dict, name: str, kind=str):
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValidationError({name: f"'{name}' is required ({'a string' if kind is str else 'an integer'})."})
    return value


def _team_json(membership) -> dict:
    team = membership.team
    return {"slug": team.slug, "name": team.name, "url": team.subdomain_url, "status": team.status,
            "role": membership.role}


def _member_json(membership) -> dict:
    user = membership.user
    return {"user": user.pk, "email": user.email, "username": user.get_username(), "role": membership.role,
            "joined_at": membership.created_at.isoformat()}


def _invitation_json(invitation) -> dict:
    return {"id": invitation.pk, "email": invitation.email, "role": invitation.role,
            "invited_by": invitation.invited_by.email if invitation.invited_by else None,
            "sent_at": invitation.sent_at.isoformat(), "expires_at": invitation.expires_at.isoformat()}


def _membership(request, slug):
    return selectors.membership_in(request.user, slug)


def list_teams(request):
    return 200, {"teams": [_team_json(membership) for membership in selectors.memberships_of(request.user)]}


def create_team(request):
    data = _body(request)
    team = services.create_team(_field(data, "slug"), str(data.get("name") or ""), str(data.get("region") or ""),
                                actor=request.user)
    return 201, _team_json(selectors.membership_in(request.user, team.slug))


def get_team(request, slug):
    membership = _membership(request, slug)
    return 200, {**_team_json(membership), "progress": selectors.team_status(membership.team)}


def list_members(request, slug):
    membership = _membership(request, slug)
    return 200, {"members": [_member_json(member) for member in selectors.members_of(membership.team)]}


def change_role(request, slug, user_id):
    membership = _membership(request, slug)
    role = _field(_body(request), "role")
    return 200, _member_json(services.change_role(selectors.member_of(membership.team, user_id), role,
                                                  actor=request.user))


def remove_member(request, slug, user_id):
    membership = _membership(request, slug)
    services.remove_member(selectors.member_of(membership.team, user_id), actor=request.user)
    return 200, {"removed": user_id}


def leave(request, slug):
    services.leave_team(_membership(request, slug).team, actor=request.user)
    return 200, {"left": slug}


def transfer_ownership(request, slug):
    membership = _membership(request, slug)
    new_owner = selectors.member_of(membership.team, _field(_body(request), "user", int))
    return 200, _member_json(services.transfer_ownership(membership.team, new_owner, actor=request.user))


def list_invitations(request, slug):
    membership = _membership(request, slug)
    return 200, {"invitations": [_invitation_json(invitation)
                                 for invitation in selectors.invitations_visible_to(membership)]}


def invite(request, slug):
    membership = _membership(request, slug)
    data = _body(request)
    invitation = services.invite(membership.team, _field(data, "email"), _field(data, "role"), actor=request.user)
    return 201, _invitation_json(invitation)


def revoke_invitation(request, slug, invitation_id):
    membership = _membership(request, slug)
    services.revoke_invitation(selectors.invitation_of(membership.team, invitation_id), actor=request.user)
    return 200, {"revoked": invitation_id}


def resend_invitation(request, slug, invitation_id):
    membership = _membership(request, slug)
    invitation = services.resend_invitation(selectors.invitation_of(membership.team, invitation_id),
                                            actor=request.user)
    return 200, _invitation_json(invitation)


def accept_invitation(request):
    membership = services.accept_invitation(_field(_body(request), "key"), actor=request.user)
    return 200, _team_json(membership)


teams = endpoint(get=list_teams, post=create_team)
team = endpoint(get=get_team)
members = endpoint(get=list_members)
member = endpoint(patch=change_role, delete=remove_member)
team_leave = endpoint(post=leave)
team_transfer = endpoint(post=transfer_ownership)
invitations = endpoint(get=list_invitations, post=invite)
invitation = endpoint(delete=revoke_invitation)
invitation_resend = endpoint(post=resend_invitation)
invitation_accept = endpoint(post=accept_invitation)
