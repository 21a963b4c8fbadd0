"""Error pages: JSON on the private API and the members' JSON endpoints (their clients are programs), Django's
defaults elsewhere."""

from django.http import JsonResponse
from django.views import csrf, defaults

# Paths whose clients read JSON: the private API (instances) and the members' API (/api/, members/api.py).
JSON_PREFIXES = ("/private/", "/api/")


def _json_or(default_view, status: int, message: str):
    def handler(request, exception=None):
        if request.path.startswith(JSON_PREFIXES):
            return JsonResponse({"error": message}, status=status)
        if default_view is defaults.server_error:
            return default_view(request)
        return default_view(request, exception)

    return handler


# Every URL conf imports these four names: Django looks them up on the root URL conf module.
handler400 = _json_or(defaults.bad_request, 400, "bad request")
handler403 = _json_or(defaults.permission_denied, 403, "forbidden")
handler404 = _json_or(defaults.page_not_found, 404, "not found")
handler500 = _json_or(defaults.server_error, 500, "internal error")


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: the reason as JSON on the JSON endpoints (send the `csrftoken` cookie's value as
    `X-CSRFToken`), Django's page elsewhere."""
    if request.path.startswith(JSON_PREFIXES):
        return JsonResponse({"error": f"CSRF check failed: {reason}"}, status=403)
    return csrf.csrf_failure(request, reason)
