"""Only the private API and the metrics: for the process bound to the private network address."""

from cloudctl.errors import handler400, handler403, handler404, handler500  # noqa: F401
from django.urls import include, path

from cloudctl.metrics import metrics

urlpatterns = [
    path("", include("credentials.urls")),
    path("", include("sso.private_urls")),
    path("private/metrics", metrics, name="metrics"),
]
