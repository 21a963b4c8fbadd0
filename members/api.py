"""The members' JSON endpoints (/api/...): the pages' rules and services, for programs. Session-authenticated
with Django's CSRF check (send the `csrftoken` cookie's value as `X-CSRFToken`). Every refusal is JSON:
401 signed out, 404 not a member of that team (or no such team, member, invitation or restore), 403 the role does
not allow it, 409 the team's state refuses it (the last owner, a restore in progress), 429 too many invitations,
400 bad input (a restore point outside the window: with the `nearest` valid points), 503 the team's replica could
not be read, 405 another method."""

import json

from django.core.exceptions import ValidationError
from django.http import JsonResponse

from backups.forms import RestorePointForm, RestoreRequestForm
from backups.pages import RESTORE_REFUSALS, show_refusal
from backups.preview import PreviewUnavailable
from backups.selectors import offered_restore_changes
from backups.window import EmptyReplica

from . import restores, selectors, services
from .errors import REFUSALS, messages_of, status_for


def _error(status: int, messages: list[str], **more) -> JsonResponse:
    return JsonResponse({"error": " ".join(messages), "messages": messages, **more}, status=status)


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
        except RESTORE_REFUSALS as refusal:  # what the replica or a restore's state refuses
            return _restore_refusal(refusal)
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


def _restore_refusal(refusal: Exception) -> JsonResponse:
    """A refusal of `backups` (RESTORE_REFUSALS) with the pages' status; a point outside the window names the
    nearest valid ones."""
    context = {}
    status = show_refusal(context, refusal, empty_status=409)
    nearest = {"nearest": [_point_json(point) for point in context["nearest"]]} if "nearest" in context else {}
    return _error(status, [str(refusal)], **nearest)


def _cleaned(form) -> dict:
    """The form's cleaned data, or its errors as a ValidationError (a 400), each message naming its field."""
    if not form.is_valid():
        raise ValidationError([message if field == "__all__" else f"{field}: {message}"
                               for field, errors in form.errors.items() for message in errors])
    return form.cleaned_data


def _point_json(point) -> dict:
    return {"txid": point.txid_hex, "time": point.time.isoformat()}


def _window_json(window, plan) -> dict:
    body = {"window": {
        "oldest": _point_json(window.oldest), "newest": _point_json(window.newest), "points": len(window.points),
        "levels": [{"level": span.level, "files": span.files, "oldest": span.oldest.isoformat(),
                    "newest": span.newest.isoformat(),
                    "step_seconds": span.step.total_seconds() if span.step is not None else None}
                   for span in window.levels]}}
    if plan is not None:
        body["plan"] = {"point": _point_json(plan.point), "database_bytes": plan.database_bytes,
                        "download_bytes": plan.download_bytes}
    return body


def _restore_json(restore) -> dict:
    def moment(value):
        return value.isoformat() if value else None

    return {"id": restore.pk, "database": restore.database, "target_txid": f"{restore.target_txid:016x}",
            "target_time": restore.target_time.isoformat(), "state": restore.state, "message": restore.message,
            "requested_by": restore.requested_by, "requested_at": moment(restore.requested_at),
            "swapped_at": moment(restore.swapped_at), "swapped_back_at": moment(restore.swapped_back_at),
            "volumes_deleted_at": moment(restore.volumes_deleted_at), "changes": offered_restore_changes(restore)}


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


def backups(request, slug):
    """The window of one of the team's databases (`?database=`, default data.db), read from its replica now, what a
    restore to `?timestamp=` or `?txid=` would restore (`plan`), and the team's restores."""
    team = _membership(request, slug).team
    listed = [_restore_json(restore) for restore, _ in restores.restores_of(team, actor=request.user)]
    point = _cleaned(RestorePointForm(request.GET))
    body = {"database": point["database"], "restores": listed}
    try:
        window, plan = restores.restorable_window(team, database=point["database"], timestamp=point["timestamp"],
                                                  txid=point["txid"], actor=request.user)
    except EmptyReplica as empty:
        return 200, {**body, "window": None, "empty": str(empty)}  # nothing to restore yet is a fact
    return 200, {**body, **_window_json(window, plan if point["timestamp"] or point["txid"] else None)}


def request_restore(request, slug):
    """A restore into a new volume, to `timestamp`, `txid` or `latest` (exactly one) of `database`: recorded and
    queued (202); with `dry_run`, what it would restore (200) and nothing changes."""
    team = _membership(request, slug).team
    data = _body(request)
    point = _cleaned(RestoreRequestForm({**{name: data[name] for name in ("database", "timestamp", "txid")
                                            if isinstance(data.get(name), str)}, "latest": data.get("latest") is True}))
    timestamp, txid = point["timestamp"], point["txid"]
    if data.get("dry_run") is True:
        window, plan = restores.restorable_window(team, database=point["database"], timestamp=timestamp, txid=txid,
                                                  actor=request.user)
        return 200, {"dry_run": True, "database": point["database"], **_window_json(window, plan)}
    restore = restores.request_restore(team, database=point["database"], timestamp=timestamp, txid=txid,
                                       actor=request.user)
    return 202, _restore_json(restore)


def get_restore(request, slug, restore_id):
    """One of the team's restores and, while its preview runs, the preview's tables, counts and first rows."""
    found = restores.restore_of(_membership(request, slug).team, restore_id, actor=request.user)
    body = _restore_json(found)
    try:
        body["preview"] = [{"table": table.name, "count": table.count, "columns": table.columns, "rows": table.rows}
                           for table in restores.preview(found, actor=request.user)]
    except PreviewUnavailable as unavailable:
        body["preview_unavailable"] = str(unavailable)
    return 200, body


def change_restore(request, slug, restore_id, change):
    """Confirm the restore's swap, swap it back or cancel it: recorded and queued (202)."""
    found = restores.restore_of(_membership(request, slug).team, restore_id, actor=request.user)
    return 202, _restore_json(restores.CHANGES[change](found, actor=request.user))


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
team_backups = endpoint(get=backups)
team_restores = endpoint(post=request_restore)
team_restore = endpoint(get=get_restore)
team_restore_change = endpoint(post=change_restore)
