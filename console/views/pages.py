"""What every dashboard page shares: who may see it, how it is rendered, how a team is looked up."""

from functools import wraps

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render

from teams.models import Team
from teams.permissions import VIEW_FLEET


def dashboard_view(*permissions: str, json: bool = False):
    """Staff only (anyone else is sent to the admin's login), then the fleet view permission and
    `permissions`: a staff user without them gets 403, as JSON for the pages' JSON endpoints. It wraps every
    other decorator, so the refusal comes before anything else is checked or revealed."""
    needed = (VIEW_FLEET, *permissions)

    def decorate(view):
        @wraps(view)
        def guarded(request, *args, **kwargs):
            if not request.user.has_perms(needed):
                if json:
                    return JsonResponse({"error": "permission denied"}, status=403)
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return staff_member_required(guarded)

    return decorate


def render_page(request, template: str, context: dict, *, status: int = 200):
    # The admin's own context (site header, user links): the dashboard wears the admin's look.
    return render(request, template, {**admin.site.each_context(request), **context}, status=status)


def team_or_404(slug: str) -> Team:
    return get_object_or_404(Team.objects.select_related("instance"), slug=slug)
