"""The private API that team instances call. No session, no CSRF cookie, JSON in every answer."""

import json
import logging
import re

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import DatabaseError
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from .audit import Client, client_address
from .formats import DEFAULT_FORMAT
from .models import CredentialEvent
from .services import (
    UNAVAILABLE_MESSAGE, ExchangeRefused, exchange_token, receive_signal, refuse, render_credentials,
)

logger = logging.getLogger(__name__)
Reason = CredentialEvent.Reason
BEARER = re.compile(r"bearer\s+(\S+)\s*", re.IGNORECASE)
# The instance's boot id, sent by its entrypoint and by every credential renewal of that boot.
BOOT_HEADER = "X-Cloudctl-Boot"


def json_error(status: int, message: str, *, retry_after: int | None = None, **headers) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status, headers=headers)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


def client_of(request) -> Client:
    """The caller's address (from the proxy header only when a trusted proxy sent it) and user agent."""
    forwarded = request.headers.get(settings.CLIENT_IP_HEADER) if settings.CLIENT_IP_HEADER else None
    return Client(ip=client_address(request.META.get("REMOTE_ADDR"), forwarded),
                  user_agent=request.headers.get("User-Agent", ""))


def presented_token(request) -> str | None:
    """`Authorization: Bearer <token>`, or the form field `secret` (datasette-files-s3's contract)."""
    header = request.headers.get("Authorization")
    if header:
        match = BEARER.fullmatch(header)
        return match.group(1) if match else header
    return request.POST.get("secret") or None


def check_body_size(request, client: Client, **audit) -> None:
    """Refuse (and record) a body over PRIVATE_API_MAX_BODY before anything reads it."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise refuse(400, "bad Content-Length", Reason.BAD_REQUEST, client, **audit) from None
    if length > settings.PRIVATE_API_MAX_BODY:
        raise refuse(413, f"body over {settings.PRIVATE_API_MAX_BODY} bytes", Reason.BODY_TOO_LARGE, client, **audit)


@csrf_exempt
def credentials(request):
    client = client_of(request)
    response_format = request.GET.get("format", DEFAULT_FORMAT)
    try:
        if request.method != "POST":
            refusal = refuse(405, "use POST", Reason.METHOD_NOT_ALLOWED, client, response_format=response_format)
            return json_error(refusal.status, refusal.message, Allow="POST")
        check_body_size(request, client)
        # LookupError: the body's charset names a bytes-to-bytes codec (rot13, base64, ...), not a text encoding.
        try:
            token = presented_token(request)
        except (LookupError, MultiPartParserError, SuspiciousOperation, UnicodeError, ValueError):
            raise refuse(400, "unreadable request body", Reason.BAD_REQUEST, client) from None
        exchange = exchange_token(token, response_format, client, boot=request.headers.get(BOOT_HEADER))
    except ExchangeRefused as refusal:
        return json_error(refusal.status, refusal.message, retry_after=refusal.retry_after)
    except DatabaseError:
        # Nothing can be verified or audited without the database: the caller should come back shortly.
        logger.exception("database unavailable during a credential exchange")
        return json_error(503, UNAVAILABLE_MESSAGE, retry_after=settings.STS_RETRY_AFTER_SECONDS)
    return JsonResponse(render_credentials(exchange, response_format, request.build_absolute_uri),
                        headers={"Cache-Control": "no-store"})


# Litestream's heartbeat is a GET; datasette-scale-to-zero is configured to POST its report.
SIGNAL_METHODS = {"backup": "GET", "shutdown": "POST", "fingerprint": "POST"}


def signal_report(request, client: Client, signal: str) -> dict:
    """The JSON object a signal may carry (the shutdown report); empty when there is no body."""
    check_body_size(request, client, signal=signal)
    if not request.body:
        return {}
    try:
        report = json.loads(request.body)
    except (UnicodeError, ValueError):
        report = None
    if not isinstance(report, dict):
        raise refuse(400, "the body must be a JSON object", Reason.BAD_REQUEST, client, signal=signal)
    return report


@csrf_exempt
def instance_signal(request, team_id: str, signal: str, value: str):
    """A team instance's signal on its signed URL (clients that cannot send headers: the URL is the secret)."""
    client = client_of(request)
    try:
        if request.method != SIGNAL_METHODS[signal]:
            refusal = refuse(405, f"use {SIGNAL_METHODS[signal]}", Reason.METHOD_NOT_ALLOWED, client, signal=signal)
            return json_error(refusal.status, refusal.message, Allow=SIGNAL_METHODS[signal])
        report = signal_report(request, client, signal)
        team = receive_signal(int(team_id), signal, value, report, client)
    except ExchangeRefused as refusal:
        return json_error(refusal.status, refusal.message, retry_after=refusal.retry_after)
    except DatabaseError:
        logger.exception("database unavailable while recording a %s signal", signal)
        return json_error(503, UNAVAILABLE_MESSAGE, retry_after=settings.STS_RETRY_AFTER_SECONDS)
    return JsonResponse({"recorded": signal, "team": team.pk}, headers={"Cache-Control": "no-store"})
