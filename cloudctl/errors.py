"""Error pages: JSON on the private API (its clients are programs), Django's defaults elsewhere."""

from django.http import JsonResponse
from django.views import defaults

PRIVATE_PREFIX = "/private/"


def _json_or(default_view, status: int, message: str):
    def handler(request, exception=None):
        if request.path.startswith(PRIVATE_PREFIX):
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
