"""Only the pages people use (the dashboard, the admin, sign-in, the members' pages and JSON endpoints): for the
process on the public address."""

from cloudctl.errors import handler400, handler403, handler404, handler500  # noqa: F401
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from cloudctl.accounts import admin_login

# The admin's login URL serves allauth's login: one login, its limits and TOTP (see cloudctl.accounts).
admin.site.login = admin_login

urlpatterns = [
    # Everyone signed in starts on their teams (members/); staff find the dashboard linked there.
    path("", RedirectView.as_view(pattern_name="members:teams")),
    path("", include("members.urls")),
    path("api/", include("members.api_urls")),
    path("dashboard/", include("console.urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("", include("sso.urls")),
]
