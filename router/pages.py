"""The pages the router serves itself, without touching any tenant: one definition for both executors."""

from __future__ import annotations

import html
import logging
import secrets
from dataclasses import dataclass

from .decision import Failed, NotFound, SettingUp, Suspended

logger = logging.getLogger(__name__)

# How soon a browser should come back to a team that is waking or being set up.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Page:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _page(status: int, title: str, message: str, *, retry_after: int | None = None) -> Page:
    body = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;"
            f"color:#222}}h1{{font-size:1.4rem}}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{message}</p></body></html>\n").encode()
    headers = [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"),
               ("content-length", str(len(body)))]
    if retry_after is not None:
        headers += [("retry-after", str(retry_after)), ("refresh", str(retry_after))]
    return Page(status, headers, body)


def not_found() -> Page:
    return _page(404, "No such space", "There is no space at this address. Check the name in the address bar.")


def suspended(slug: str) -> Page:
    return _page(403, "This space is suspended", f"The space <b>{html.escape(slug)}</b> is suspended. Its data is "
                 "kept; ask its owners or the service's support to enable it again.")


def setting_up(slug: str) -> Page:
    return _page(503, "This space is being set up", f"The space <b>{html.escape(slug)}</b> is being set up. This "
                 "page refreshes by itself.", retry_after=RETRY_AFTER_SECONDS)


def failed(slug: str) -> Page:
    """Honest, with a request id the operators find in the router's log."""
    request_id = secrets.token_hex(8)
    logger.error("router: team %s has a failed instance (request id %s)", slug, request_id)
    return _page(503, "This space is not working", f"The space <b>{html.escape(slug)}</b> failed to start and "
                 "its operators have been told. If you contact support, give them this request id: "
                 f"<code>{request_id}</code>.")


def waking(slug: str) -> Page:
    return _page(503, "This space is waking up", f"The space <b>{html.escape(slug)}</b> is starting. This page "
                 "refreshes by itself.", retry_after=RETRY_AFTER_SECONDS)


def healthy() -> Page:
    return Page(200, [("content-type", "text/plain; charset=utf-8"), ("content-length", "3")], b"ok\n")


def bad_request(message: str) -> Page:
    return _page(400, "Bad request", html.escape(message))


def replayed() -> Page:
    return _page(403, "Not routed", "This request was replayed to the router by another app, or carries a header "
                 "only Fly's proxy sets: it is not routed.")


def unavailable(slug: str) -> Page:
    return _page(502, "This space did not answer", f"The space <b>{html.escape(slug)}</b> did not answer the "
                 "request. Try again.")


def for_decision(decision) -> Page:
    """The page for every decision but a route."""
    match decision:
        case NotFound():
            return not_found()
        case Suspended(slug=slug):
            return suspended(slug)
        case SettingUp(slug=slug):
            return setting_up(slug)
        case Failed(slug=slug):
            return failed(slug)
    raise TypeError(f"no page for {decision!r}")
