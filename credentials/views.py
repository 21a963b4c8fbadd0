"""The private API that team instances call. No session, no CSRF cookie, JSON in every answer."""

import logging
import re

from django.conf import settings
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.core.validators import validate_ipv46_address
from django.db import DatabaseError
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from .audit import Client
from .formats import DEFAULT_FORMAT
from .models import CredentialEvent
from .services import UNAVAILABLE_MESSAGE, ExchangeRefused, exchange_token, refuse, render_credentials

logger = logging.getLogger(__name__)
Reason = CredentialEvent.Reason
BEARER = re.compile(r"bearer\s+(\S+)\s*", re.IGNORECASE)


def json_error(status: int, message: str, *, retry_after: int | None = None, **headers) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status, headers=headers)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


def client_of(request) -> Client:
    """The caller's address (from the trusted proxy header when one is configured) and user agent."""
    address = request.META.get("REMOTE_ADDR")
    if settings.CLIENT_IP_HEADER:
        forwarded = request.headers.get(settings.CLIENT_IP_HEADER, "").strip()
        address = forwarded or address
    try:
        validate_ipv46_address(address or "")
    except ValidationError:
        address = None
    return Client(ip=address, user_agent=request.headers.get("User-Agent", ""))


def presented_token(request) -> str | None:
    """`Authorization: Bearer <token>`, or the form field `secret` (datasette-files-s3's contract)."""
    header = request.headers.get("Authorization")
    if header:
        match = BEARER.fullmatch(header)
        return match.group(1) if match else header
    return request.POST.get("secret") or None


@csrf_exempt
def credentials(request):
    client = client_of(request)
    response_format = request.GET.get("format", DEFAULT_FORMAT)
    try:
        if request.method != "POST":
            refusal = refuse(405, "use POST", Reason.METHOD_NOT_ALLOWED, client, response_format=response_format)
            return json_error(refusal.status, refusal.message, Allow="POST")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise refuse(400, "bad Content-Length", Reason.BAD_REQUEST, client) from None
        if length > settings.PRIVATE_API_MAX_BODY:
            raise refuse(413, f"body over {settings.PRIVATE_API_MAX_BODY} bytes", Reason.BODY_TOO_LARGE, client)
        # LookupError: the body's charset names a bytes-to-bytes codec (rot13, base64, ...), not a text encoding.
        try:
            token = presented_token(request)
        except (LookupError, MultiPartParserError, SuspiciousOperation, UnicodeError, ValueError):
            raise refuse(400, "unreadable request body", Reason.BAD_REQUEST, client) from None
        exchange = exchange_token(token, response_format, client)
    except ExchangeRefused as refusal:
        return json_error(refusal.status, refusal.message, retry_after=refusal.retry_after)
    except DatabaseError:
        # Nothing can be verified or audited without the database: the caller should come back shortly.
        logger.exception("database unavailable during a credential exchange")
        return json_error(503, UNAVAILABLE_MESSAGE, retry_after=settings.STS_RETRY_AFTER_SECONDS)
    return JsonResponse(render_credentials(exchange, response_format), headers={"Cache-Control": "no-store"})
