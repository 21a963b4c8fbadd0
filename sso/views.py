"""Single sign-on (docs/sso.md): the authorize page on the public host, and the two private API endpoints on which
a team's instance redeems a code and re-validates its actors (JSON, its team token, no session or CSRF)."""

import json
import logging

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from credentials.services import UNAVAILABLE_MESSAGE, ExchangeRefused, authenticate_instance, refuse
from credentials.models import CredentialEvent
from credentials.views import check_body_size, client_of, json_error, presented_token

from .services import (
    CODE_SHAPE, GRANT_SHAPE, USER_ID_SHAPE, Refused, issue_code, read_authorize_request, redeem_code, revalidate,
    session_reference,
)

logger = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store"}


@require_GET
def authorize(request):
    """docs/sso.md §1: a 400 page for any bad request (never a redirect), sign-in first, a 403 page for anyone who
    may not sign in to the team, else back to the team's callback with a code."""
    client = client_of(request)
    user = request.user if request.user.is_authenticated else None
    try:
        authorize_request = read_authorize_request(request.GET, client, user=user)
        if user is None:
            return redirect_to_login(request.get_full_path())
        location = issue_code(authorize_request, user, session_reference(request.session), client)
    except Refused as refused:
        page = render(request, "sso/refused.html", {"status": refused.status, "description": refused.description},
                      status=refused.status)
        page["Cache-Control"] = "no-store"
        return page
    return HttpResponseRedirect(location, headers={**NO_STORE, "Referrer-Policy": "no-referrer"})


def oauth_error(status: int, error: str, description: str = "") -> JsonResponse:
    body = {"error": error, **({"error_description": description} if description else {})}
    return JsonResponse(body, status=status, headers=NO_STORE)


def private_endpoint(endpoint: str):
    """The private API's frame around a single sign-on endpoint: POST only, the body's size, the team token (as
    the credential exchange checks it), a JSON object body; the view gets the verified team and the object."""

    def decorate(view):
        @csrf_exempt
        def wrapped(request):
            client = client_of(request)
            try:
                if request.method != "POST":
                    refusal = refuse(405, "use POST", CredentialEvent.Reason.METHOD_NOT_ALLOWED, client,
                                     signal=endpoint)
                    return json_error(refusal.status, refusal.message, Allow="POST")
                check_body_size(request, client, signal=endpoint)
                team = authenticate_instance(presented_token(request), client, endpoint=endpoint)
                try:
                    body = json.loads(request.body)
                except (UnicodeError, ValueError):
                    body = None
                if not isinstance(body, dict):
                    return oauth_error(400, "invalid_request", "the body must be a JSON object")
                return view(team, body, client)
            except ExchangeRefused as refusal:
                return json_error(refusal.status, refusal.message, retry_after=refusal.retry_after)
            except Refused as refused:
                return oauth_error(refused.status, refused.error, refused.description)
            except DatabaseError:
                logger.exception("database unavailable during single sign-on (%s)", endpoint)
                return json_error(503, UNAVAILABLE_MESSAGE, retry_after=settings.STS_RETRY_AFTER_SECONDS)

        return wrapped

    return decorate


@private_endpoint("sso_token")
def token(team, body, client):
    """docs/sso.md §2: a code (with its PKCE verifier and redirect URI) for the actor and a grant."""
    code = body.get("code")
    if not (isinstance(code, str) and CODE_SHAPE.fullmatch(code)):
        return oauth_error(400, "invalid_request", "code: the code the authorize redirect carried")
    return JsonResponse(redeem_code(team, code, body.get("code_verifier"), body.get("redirect_uri"), client),
                        headers=NO_STORE)


@private_endpoint("sso_actor")
def actor(team, body, client):
    """docs/sso.md §3: who a grant or a user is on the team now."""
    grant, user_id = body.get("session"), body.get("user")
    if (grant is None) == (user_id is None):
        return oauth_error(400, "invalid_request", "give either session or user")
    if grant is not None and not (isinstance(grant, str) and GRANT_SHAPE.fullmatch(grant)):
        return oauth_error(400, "invalid_request", "session: the grant id the code was redeemed for")
    if user_id is not None and not (isinstance(user_id, str) and USER_ID_SHAPE.fullmatch(user_id)):
        return oauth_error(400, "invalid_request", "user: the actor's id, a string of digits")
    return JsonResponse(revalidate(team, grant=grant, user_id=int(user_id) if user_id else None, client=client),
                        headers=NO_STORE)
