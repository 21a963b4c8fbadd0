"""Team pages: each parses and authorizes the request, calls one service or query function, renders.

Every view is wrapped in `dashboard_view` (console/views/pages.py): staff only (others are sent to the admin
login), then the permissions of `teams.permissions` (403 without them). Long actions are queued as tasks; the
team page polls `team_status` (JSON) to show their progress without a reload.
"""

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from backups.selectors import backup_is_healthy, last_drill
from domains.selectors import certificate_status
from instances.actions import action_for, permitted_actions
from instances.selectors import instance_status
from instances.services import create_team_and_provision, request_action, rotate_token_and_restart
from teams.models import Team, TeamEvent
from teams.permissions import ADD_TEAM, ROTATE_TOKEN, authorize

from ..forms import ConfirmForm, TeamCreateForm, TeamFilterForm
from ..selectors import fleet_summary, images_in_use, team_list, timeline
from .pages import dashboard_view, render_page, team_or_404

RECENT_ALERTS = 10


@dashboard_view()
@require_GET
def home(request):
    alerts = TeamEvent.objects.filter(is_error=True).select_related("team")[:RECENT_ALERTS]
    return render_page(request, "dashboard/home.html", {"title": "Fleet", "summary": fleet_summary(),
                                                        "alerts": alerts, "certificate": certificate_status()})


@dashboard_view()
@require_GET
def teams(request):
    form = TeamFilterForm(request.GET, images=images_in_use())
    filters = form.cleaned_data if form.is_valid() else {}
    filters = {key: value for key, value in filters.items() if value}
    page = Paginator(team_list(**filters), settings.DASHBOARD_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render_page(request, "dashboard/team_list.html", {
        "title": "Teams", "form": form, "page": page, "query": query.urlencode()})


@dashboard_view(ADD_TEAM)
def team_create(request):
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = create_team_and_provision(**form.cleaned_data, actor=request.user)
        except ValidationError as error:
            for field, problems in error.message_dict.items():
                form.add_error(field if field in form.fields else None, problems)
        else:
            messages.success(request, f"Team {team.slug} created; its provisioning is queued.")
            return redirect("dashboard:team", slug=team.slug)
    return render_page(request, "dashboard/team_form.html", {"title": "New team", "form": form},
                   status=400 if form.errors else 200)


@dashboard_view()
@require_GET
def team_detail(request, slug):
    team = team_or_404(slug)
    return render_page(request, "dashboard/team_detail.html", {
        "title": f"{team.name} ({team.slug})", "team": team, "instance": getattr(team, "instance", None),
        "timeline": timeline(team), "actions": team.actions.all()[:10],
        "offered_actions": permitted_actions(request.user), "confirm_form": ConfirmForm(team=team),
        "last_drill": last_drill(team), "backup_healthy": backup_is_healthy(team),
    })


@dashboard_view(json=True)
@require_GET
def team_status(request, slug):
    """What the team page refreshes while it is open: state, steps, actions in progress, latest events."""
    team = Team.objects.select_related("instance").filter(slug=slug).first()
    if team is None:
        return JsonResponse({"error": "no such team"}, status=404)
    return JsonResponse({
        **instance_status(team),
        "token_generation": team.token_generation,
        "timeline": [{"time": entry.time.isoformat(), "kind": entry.kind, "message": entry.message,
                      "is_error": entry.is_error, "actor": entry.actor} for entry in timeline(team, length=15)],
    }, headers={"Cache-Control": "no-store"})


@dashboard_view()
@require_POST
def team_action(request, slug, kind):
    """Queue one of `instances.actions.ACTIONS`; one that asks for it, only with the team's slug typed."""
    team = team_or_404(slug)
    try:
        registered = action_for(kind)
    except ValueError:
        messages.error(request, f"Unknown action {kind!r}.")
        return redirect("dashboard:team", slug=team.slug)
    authorize(request.user, registered.permission)  # without it a 403, whatever was typed
    if registered.confirm_text:
        form = ConfirmForm(request.POST, team=team)
        if not form.is_valid():
            messages.error(request, " ".join(form.errors["confirm"]))
            return redirect("dashboard:team", slug=team.slug)
    action = request_action(team, registered.kind, actor=request.user)
    messages.info(request, f"{action.get_kind_display()} queued.")
    return redirect("dashboard:team", slug=team.slug)


@dashboard_view(ROTATE_TOKEN)
@require_POST
def team_rotate_token(request, slug):
    team = team_or_404(slug)
    restart = rotate_token_and_restart(team, actor=request.user)
    messages.success(request, f"Token rotated to generation {team.token_generation}: the old one no longer works"
                              + ("; the instance restarts with the new one." if restart else "."))
    return redirect("dashboard:team", slug=team.slug)
