"""The members' pages (/teams/...): each parses the request, looks the team up through the user's membership (no
membership: 404), calls one service or selector and renders. A refusal re-renders the team page with its
reason and status (403, 409, 400: members/errors.py)."""

from functools import partial, wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backups.forms import RestorePointForm, RestoreRequestForm
from backups.pages import CHANGE_DONE, RESTORE_REFUSALS, preview_context, show_refusal, window_context

from . import restores, selectors, services
from .errors import REFUSALS, NotAMember, messages_of, status_for
from .forms import InviteForm, RoleForm, TeamForm, TransferForm
from .links import remember_invitation


@login_required
@require_GET
def teams(request):
    return render(request, "members/teams.html", {
        "title": "My teams", "memberships": selectors.memberships_of(request.user),
        "can_create": selectors.teams_created_by(request.user) < settings.MAX_TEAMS_PER_USER,
        "max_teams": settings.MAX_TEAMS_PER_USER})


@login_required
@require_http_methods(["GET", "POST"])
def team_create(request):
    form = TeamForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            team = services.create_team(**form.cleaned_data, actor=request.user)
        except ValidationError as error:
            status = status_for(error)
            for field, problems in (error.message_dict.items() if hasattr(error, "error_dict")
                                    else [(None, error.messages)]):
                form.add_error(field if field in form.fields else None, problems)
        else:
            messages.success(request, f"Team {team.slug} created: it is being set up.")
            return redirect("members:team", slug=team.slug)
    return render(request, "members/team_form.html", {"title": "New team", "form": form},
                  status=400 if form.errors and status == 200 else status)


def _membership_or_404(user, slug):
    try:
        return selectors.membership_in(user, slug)
    except NotAMember:
        raise Http404("no such team") from None


def _team_page(request, slug, *, errors=(), status=200):
    membership = _membership_or_404(request.user, slug)
    team = membership.team
    manages = membership.has_role_at_least(services.Role.ADMIN)
    return render(request, "members/team.html", {
        "title": f"{team.name} ({team.slug})", "team": team, "membership": membership,
        "is_owner": membership.role == services.Role.OWNER, "manages": manages,
        "members": selectors.members_of(team), "status": selectors.team_status(team),
        "invitations": selectors.invitations_visible_to(membership) if manages else [], "now": timezone.now(),
        "invite_form": InviteForm(), "roles": services.Role.choices, "errors": errors,
    }, status=status)


@login_required
@require_GET
def team(request, slug):
    return _team_page(request, slug)


@login_required
@require_GET
def team_status(request, slug):
    """What the team page polls (console/static/dashboard/progress.js, the dashboard's own script)."""
    membership = _membership_or_404(request.user, slug)
    return JsonResponse(selectors.team_status(membership.team), headers={"Cache-Control": "no-store"})


def team_change(view):
    """A POST on a team's page: the user's membership (404 without), then `view`; a refusal re-renders the team
    page with its reason and status, success goes back to it with a message."""

    @login_required
    @require_POST
    @wraps(view)
    def changed(request, slug, **kwargs):
        membership = _membership_or_404(request.user, slug)
        try:
            done = view(request, membership, **kwargs)
        except REFUSALS as error:
            if isinstance(error, NotAMember):
                raise Http404("not found") from None
            return _team_page(request, slug, errors=messages_of(error), status=status_for(error))
        messages.success(request, done)
        # Someone who just left (or removed themselves) no longer sees the team.
        if not selectors.memberships_of(request.user).filter(team=membership.team).exists():
            return redirect("members:teams")
        return redirect("members:team", slug=slug)

    return changed


def _valid(form):
    if not form.is_valid():
        raise ValidationError([f"{field}: {' '.join(problems)}" for field, problems in form.errors.items()])
    return form.cleaned_data


@team_change
def invite(request, membership):
    data = _valid(InviteForm(request.POST))
    invitation = services.invite(membership.team, data["email"], data["role"], actor=request.user)
    return f"Invitation sent to {invitation.email}."


@team_change
def resend_invitation(request, membership, invitation_id):
    invitation = services.resend_invitation(selectors.invitation_of(membership.team, invitation_id),
                                            actor=request.user)
    return f"A new link went to {invitation.email}; the previous one no longer works."


@team_change
def revoke_invitation(request, membership, invitation_id):
    invitation = services.revoke_invitation(selectors.invitation_of(membership.team, invitation_id),
                                            actor=request.user)
    return f"The invitation of {invitation.email} is revoked."


@team_change
def change_role(request, membership, user_id):
    data = _valid(RoleForm(request.POST))
    changed = services.change_role(selectors.member_of(membership.team, user_id), data["role"], actor=request.user)
    return f"{changed.user.email or changed.user.get_username()} is now {changed.get_role_display().lower()}."


@team_change
def transfer_ownership(request, membership):
    data = _valid(TransferForm(request.POST))
    new_owner = services.transfer_ownership(membership.team, selectors.member_of(membership.team, data["user"]),
                                            actor=request.user)
    return f"{new_owner.user.email or new_owner.user.get_username()} owns the team now; you are an admin."


@team_change
def remove_member(request, membership, user_id):
    services.remove_member(selectors.member_of(membership.team, user_id), actor=request.user)
    return "You left the team." if user_id == request.user.pk else "Member removed."


@team_change
def leave(request, membership):
    services.leave_team(membership.team, actor=request.user)
    return f"You left {membership.team.slug}."


def restorer_view(view):
    """A page or POST about the team's restores (owners and admins: members/restores.py checks): the user's
    membership first (404 without); a refusal of their role re-renders the team page with its reason (403)."""

    @login_required
    @wraps(view)
    def guarded(request, slug, **kwargs):
        membership = _membership_or_404(request.user, slug)
        try:
            return view(request, membership.team, **kwargs)
        except REFUSALS as error:
            if isinstance(error, NotAMember):
                raise Http404("not found") from None
            return _team_page(request, slug, errors=messages_of(error), status=status_for(error))

    return guarded


def _backups_page(request, team, context, *, status=200):
    return render(request, "members/backups.html", {
        "title": f"Backups of {team.slug}", "team": team, "form": RestorePointForm(),
        "request_form": RestoreRequestForm(), "restores": restores.restores_of(team, actor=request.user),
        **context}, status=status)


@restorer_view
@require_GET
def backups(request, team):
    """The restorable window of one of the team's databases, read from its replica now, what a restore to a given
    point would restore, and the team's restores."""
    context, status = window_context(request.GET, partial(restores.restorable_window, team, actor=request.user))
    return _backups_page(request, team, context, status=status)


@restorer_view
@require_POST
def restore_request(request, team):
    form = RestoreRequestForm(request.POST)
    if not form.is_valid():
        return _backups_page(request, team, {"request_form": form}, status=400)
    point = form.cleaned_data
    try:
        restore = restores.request_restore(team, database=point["database"], timestamp=point["timestamp"],
                                           txid=point["txid"], actor=request.user)
    except RESTORE_REFUSALS as refusal:
        context = {"request_form": form, "database": point["database"]}
        return _backups_page(request, team, context, status=show_refusal(context, refusal, empty_status=409))
    messages.success(request, f"Restore {restore.pk} to {restore.target_time:%Y-%m-%d %H:%M:%S} UTC requested: "
                              "its preview will show here once it is ready.")
    return redirect("members:team_backups", slug=team.slug)


@restorer_view
@require_GET
def restore(request, team, restore_id):
    """One restore and, while its preview runs, the preview's tables, counts and first rows."""
    found = restores.restore_of(team, restore_id, actor=request.user)
    context, status = preview_context(found, partial(restores.preview, found, actor=request.user))
    context.update(title=f"Restore {found.pk} of {team.slug}", team=team)
    return render(request, "members/restore.html", context, status=status)


@restorer_view
@require_POST
def restore_change(request, team, restore_id, change):
    found = restores.restore_of(team, restore_id, actor=request.user)
    try:
        restores.CHANGES[change](found, actor=request.user)
    except RESTORE_REFUSALS as refusal:
        context = {}
        return _backups_page(request, team, context, status=show_refusal(context, refusal, empty_status=409))
    messages.success(request, f"Restore {found.pk}: {CHANGE_DONE[change]}.")
    return redirect("members:team_backups", slug=team.slug)


@require_http_methods(["GET", "POST"])
def invitation(request):
    """An invitation link (`?key=`: Django's request log names 4xx paths, never their query strings). Signed
    out: sent to sign up (or in) and back here. Signed in: a page to accept it (POST)."""
    key = request.POST.get("key") or request.GET.get("key") or ""
    pending = selectors.invitation_for_key(key) if key else None
    if pending is None:
        return render(request, "members/invitation.html", {"title": "Invitation", "invalid": True}, status=400)
    here = f"{reverse('members:invitation')}?{urlencode({'key': key})}"
    if not request.user.is_authenticated:
        remember_invitation(request, pending)
        return redirect(f"{reverse('account_signup')}?{urlencode({'next': here})}")
    if request.method == "POST":
        try:
            membership = services.accept_invitation(key, actor=request.user)
        except REFUSALS as error:
            return render(request, "members/invitation.html", {
                "title": "Invitation", "invitation": pending, "key": key, "errors": messages_of(error)},
                status=status_for(error))
        messages.success(request, f"You joined {membership.team.slug} as {membership.get_role_display().lower()}.")
        return redirect("members:team", slug=membership.team.slug)
    return render(request, "members/invitation.html", {"title": "Invitation", "invitation": pending, "key": key})


@login_required
@require_GET
def profile(request):
    return render(request, "members/profile.html", {"title": "Profile"})
