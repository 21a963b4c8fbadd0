"""Log hygiene: a signal URL embeds a team's signed value, so it is never written out in full."""

import logging
import re

SIGNAL_VALUE = re.compile(r"(/signals/(?:backup|shutdown)/)[A-Za-z0-9_.-]+")


def redact_signal_urls(text: str) -> str:
    return SIGNAL_VALUE.sub(r"\1<redacted>", text)


class RedactSignalURLs(logging.Filter):
    """Django logs the path of every 4xx/5xx request (`django.request`): keep signal values out of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_signal_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class SkipTooManyRequests(logging.Filter):
    """`django.request` logs every 4xx answer: not a 429, which the private API's audit logs once a minute per
    address instead (credentials.audit.THROTTLED), so that a flood of throttled requests writes no flood of lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) != 429
