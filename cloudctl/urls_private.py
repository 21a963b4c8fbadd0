"""Only the private API: for the process bound to the private network address."""

from cloudctl.errors import handler400, handler403, handler404, handler500  # noqa: F401
from django.urls import include, path

urlpatterns = [path("", include("credentials.urls"))]
