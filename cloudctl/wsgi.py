import json
import logging
import os

from django.core.handlers.wsgi import WSGIRequest
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudctl.settings")
logger = logging.getLogger("cloudctl.wsgi")


def answer_unbuildable_requests(django_application):
    """Django builds the request object before any middleware or error handler runs. A header it cannot parse
    (an unknown RFC 2231 charset, a bytes codec as charset with a query string, too many query fields with a
    charset) raises there, and the WSGI server answers with its own plain-text 500. Such a request is
    malformed: answer it like every other bad request, 400 in JSON."""

    def application(environ, start_response):
        try:
            WSGIRequest(environ)  # cheap: parses headers and the query string, never reads the body
        except Exception as error:
            logger.warning("unparseable request to %s: %s", environ.get("PATH_INFO", ""), type(error).__name__)
            start_response("400 Bad Request", [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [json.dumps({"error": "bad request"}).encode()]
        return django_application(environ, start_response)

    return application


application = answer_unbuildable_requests(get_wsgi_application())
