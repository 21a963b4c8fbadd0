"""Secret hygiene for text that leaves the process: a signal URL embeds a team's signed value, and an instance's
output (a failed start's or a crash's log tail: Litestream logs its heartbeat URL when a ping fails) may carry
one, so such values are never written out in full: not to the logs, not to the database."""

import logging
import re

from django.db import models

SIGNAL_VALUE = re.compile(r"(/signals/(?:backup|shutdown)/)[A-Za-z0-9_.-]+")
# Any value signed like a team token or a signal value, wherever it appears: itsdangerous' `<payload>.<signature>`
# with a base64 JSON object as the payload (always `eyJ...`, from `{"`). JWTs look the same.
SIGNED_VALUE = re.compile(r"\beyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+")


def redact_signal_urls(text: str) -> str:
    return SIGNED_VALUE.sub("<redacted>", SIGNAL_VALUE.sub(r"\1<redacted>", text))


class RedactSignalURLs(logging.Filter):
    """Django logs the path of every 4xx/5xx request (`django.request`): keep signal values out of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_signal_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactedTextField(models.TextField):
    """A text field that stores what it is given with signal URLs and signed values redacted: for fields that
    hold an instance's output or a message built from it (`Instance.last_error`, timeline events, action and
    deployment errors). Redacting on the way in, whatever the path (`save()`, `update()`, `bulk_create()`),
    means no page, API or dump can show a live value, however it reads the row."""

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return redact_signal_urls(value) if isinstance(value, str) else value


class SkipTooManyRequests(logging.Filter):
    """`django.request` logs every 4xx answer: not a 429, which the private API's audit logs once a minute per
    address instead (credentials.audit.THROTTLED), so that a flood of throttled requests writes no flood of lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) != 429
