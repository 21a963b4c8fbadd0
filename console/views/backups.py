"""A team's backups: the restorable window and what a restore to a point would restore, the team's point-in-time
restores (request one; confirm its swap, swap it back or cancel it, as its state allows), a restore's preview,
and "drill now".

Reading the window and the preview happens in the request (bounded reads); everything that changes something is
recorded and queued by `backups.restore_requests` and `backups.drill_requests`, and run by the worker. Changing a
restore or seeing its preview (the team's rows) needs `backups.restore_database`; queuing a drill
`backups.run_drill` (teams.permissions)."""

from functools import partial

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from backups import preview
from backups.drill_requests import request_drill
from backups.forms import RestorePointForm, RestoreRequestForm
from backups.models import Restore
from backups.pages import CHANGE_DONE, RESTORE_REFUSALS, preview_context, show_refusal, window_context
from backups.restore import plan_restore
from backups.restore_requests import cancel_restore, confirm_swap, request_restore, request_swap_back
from backups.selectors import team_restore, team_restores
from teams.models import Team
from teams.permissions import RESTORE_DATABASE, RUN_DRILL

from .pages import dashboard_view, render_page, team_or_404

RESTORE_CHANGES = {"confirm_swap": confirm_swap, "swap_back": request_swap_back, "cancel": cancel_restore}


@dashboard_view()
@require_GET
def team_backups(request, slug):
    """The restorable window of one of the team's databases, read from its replica now (read-only credentials
    minted as the staff user), what a restore to a given point would restore, and the team's restores."""
    team = team_or_404(slug)
    context, status = window_context(request.GET, partial(plan_restore, team, actor=request.user))
    return _backups_page(request, team, context, status=status)


@dashboard_view(RESTORE_DATABASE)
@require_POST
def team_restore_request(request, slug):
    """Request a restore to the point the form names (pinned to it, run by the worker)."""
    team = team_or_404(slug)
    form = RestoreRequestForm(request.POST)
    if not form.is_valid():
        return _backups_page(request, team, {"request_form": form}, status=400)
    point = form.cleaned_data
    try:
        restore = request_restore(team, database=point["database"], timestamp=point["timestamp"], txid=point["txid"],
                                  actor=request.user)
    except RESTORE_REFUSALS as refusal:
        context = {"request_form": form, "database": point["database"]}
        return _backups_page(request, team, context, status=show_refusal(context, refusal, empty_status=409))
    messages.success(request, f"Restore {restore.pk} to txid {restore.target_txid:016x} "
                              f"({restore.target_time:%Y-%m-%d %H:%M:%S} UTC) requested: its new volume is being made.")
    return redirect("dashboard:team_backups", slug=team.slug)


@dashboard_view(RESTORE_DATABASE)
@require_POST
def team_restore_change(request, slug, pk, change):
    """Confirm the restore's swap, swap it back or cancel it (`RESTORE_CHANGES`)."""
    team = team_or_404(slug)
    restore = _restore_or_404(team, pk)
    try:
        RESTORE_CHANGES[change](restore, actor=request.user)
    except RESTORE_REFUSALS as refusal:
        context = {}
        return _backups_page(request, team, context, status=show_refusal(context, refusal, empty_status=409))
    messages.success(request, f"Restore {restore.pk}: {CHANGE_DONE[change]}.")
    return redirect("dashboard:team_backups", slug=team.slug)


@dashboard_view(RESTORE_DATABASE)
@require_GET
def restore_detail(request, slug, pk):
    """One restore: where it is, and while its preview runs, the preview's tables, counts and first rows."""
    team = team_or_404(slug)
    restore = _restore_or_404(team, pk)
    context, status = preview_context(restore, partial(preview.preview_tables, restore))
    context.update(title=f"Restore {restore.pk} of {team.slug}", team=team)
    return render_page(request, "dashboard/team_restore.html", context, status=status)


@dashboard_view(RUN_DRILL)
@require_POST
def team_drill(request, slug):
    """Queue a restore drill of the team's latest backup now; its result shows on the team's page once run."""
    team = team_or_404(slug)
    if request_drill(team, actor=request.user):
        messages.info(request, "Restore drill queued: its result shows here once the worker has run it.")
    else:
        messages.info(request, "A restore drill of this team is already waiting for the worker.")
    return redirect("dashboard:team", slug=team.slug)


def _backups_page(request, team: Team, context: dict, *, status: int = 200):
    return render_page(request, "dashboard/team_backups.html", {
        "title": f"Backups of {team.slug}", "team": team, "form": RestorePointForm(),
        "request_form": RestoreRequestForm(), "restores": team_restores(team),
        "may_restore": request.user.has_perm(RESTORE_DATABASE), **context}, status=status)


def _restore_or_404(team: Team, pk: int) -> Restore:
    restore = team_restore(team, pk)
    if restore is None:
        raise Http404("no such restore of this team")
    return restore
