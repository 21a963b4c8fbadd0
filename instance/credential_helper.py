#!/usr/bin/env python3
"""AWS `credential_process` for a team instance: swaps the team token for short-lived S3 credentials.

Standard library only. Litestream (aws-sdk-go-v2) runs it via `sh -c` from the profile that
entrypoint.py writes, with a one-minute timeout, whenever its cached credentials reach `Expiration`.

    CLOUDCTL_URL    the control plane's private API, e.g. http://cloudctl.internal:8001
    CLOUDCTL_TOKEN  the team token (sent only as `Authorization: Bearer`, never printed)
    CLOUDCTL_BOOT_ID  the instance's boot id, drawn by entrypoint.py at each start and sent as
                    `X-Cloudctl-Boot`: a renewal belongs to the boot that started Litestream
    CLOUDCTL_CREDENTIALS_EARLY_SECONDS  report Expiration this much earlier (default 600), so the SDK
                    refreshes before the real expiry; never earlier than now + 60 s
    CLOUDCTL_CREDENTIALS_DEADLINE       total seconds for all attempts (default 30; the SDK kills us at 60)

stdout: exactly {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}.
On failure: one line on stderr (HTTP status and the API's error text; never the token or a secret),
exit 1. The SDK passes our stderr through to Litestream's log.

Importable: `get_credentials()` returns the API's full answer (with `S3Folder` and the real
`Expiration`); entrypoint.py uses it with its own, longer deadline.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone

API_PATH = "/private/v1/credentials"
BOOT_HEADER = "X-Cloudctl-Boot"
USER_AGENT = "cloudctl-instance-credential-helper/1"
DEFAULT_EARLY_SECONDS = 600
MIN_LIFETIME_SECONDS = 60
DEFAULT_DEADLINE_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 10.0
# Statuses worth another try: rate limited, and the control plane or STS being briefly unavailable.
RETRYABLE_STATUSES = {429, 500, 502, 503, 504}
REQUIRED_KEYS = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")
PROCESS_KEYS = ("Version",) + REQUIRED_KEYS


class CredentialError(Exception):
    """The exchange failed. `str()` is safe to print: it never contains the token or a secret."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the bearer token to wherever it points: treat it as an error instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def endpoint_url(base: str) -> str:
    """CLOUDCTL_URL may be the API's base address or the full credentials URL."""
    base = base.strip()
    parsed = urllib.parse.urlsplit(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CredentialError("CLOUDCTL_URL must be an http(s) URL")
    if parsed.path.rstrip("/").endswith(API_PATH):
        return base
    return base.rstrip("/") + API_PATH


def _one_line(text: str, token: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    if token:
        text = text.replace(token, "[token]")
    return text[:limit]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; we never send one, so ignore it rather than parse it


def parse_expiration(value: str) -> datetime:
    """RFC 3339 UTC (`2026-01-01T12:00:00Z`, optionally with fractions or an offset) to an aware datetime."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def format_expiration(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fetch_credentials(url: str, token: str, *, timeout: float = REQUEST_TIMEOUT_SECONDS,
                      user_agent: str = USER_AGENT, boot: str | None = None) -> dict:
    """One POST to the private API; the parsed answer, or CredentialError."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": user_agent}
    if boot:
        headers[BOOT_HEADER] = boot
    request = urllib.request.Request(endpoint_url(url), data=b"", method="POST", headers=headers)
    try:
        with _opener.open(request, timeout=timeout) as response:
            body = response.read(64 * 1024)
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
        try:
            detail = json.loads(error.read(4096) or b"{}").get("error") or error.reason
        except (ValueError, AttributeError, OSError):
            detail = error.reason
        retry_after = _retry_after(error.headers.get("Retry-After") if error.headers else None)
        if 300 <= status < 400:
            detail = "unexpected redirect (check CLOUDCTL_URL)"
        raise CredentialError(
            f"HTTP {status}: {_one_line(detail, token)}", status=status, retry_after=retry_after,
            retryable=status in RETRYABLE_STATUSES,
        ) from None
    except (urllib.error.URLError, OSError) as error:  # refused, DNS, TLS, timeout, reset
        reason = getattr(error, "reason", error)
        raise CredentialError(f"cannot reach the control plane: {_one_line(reason, token)}",
                              retryable=True) from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise CredentialError(f"HTTP {status}: the answer is not JSON", status=status, retryable=True) from None
    if not isinstance(answer, dict) or answer.get("Version") != 1 or not all(
            isinstance(answer.get(key), str) and answer[key] for key in REQUIRED_KEYS):
        raise CredentialError(f"HTTP {status}: the answer is not credential_process JSON (Version 1)",
                              status=status)
    try:
        parse_expiration(answer["Expiration"])
    except ValueError:
        raise CredentialError(f"HTTP {status}: the answer has an unreadable Expiration", status=status) from None
    return answer


def get_credentials(url: str | None = None, token: str | None = None, *,
                    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS, max_delay: float = 10.0,
                    on_retry=None, sleep=time.sleep, clock=time.monotonic, user_agent: str = USER_AGENT,
                    boot: str | None = None) -> dict:
    """The API's full answer, retrying 429/5xx/connection errors with backoff until `deadline_seconds`.

    401/403 and malformed answers fail at once. A Retry-After longer than the time left fails at once
    too: waiting for it could not succeed. `on_retry(error, delay)` is called before each wait.
    """
    url = url if url is not None else os.environ.get("CLOUDCTL_URL", "")
    token = token if token is not None else os.environ.get("CLOUDCTL_TOKEN", "")
    boot = boot if boot is not None else os.environ.get("CLOUDCTL_BOOT_ID", "")
    if not url:
        raise CredentialError("CLOUDCTL_URL is not set")
    if not token:
        raise CredentialError("CLOUDCTL_TOKEN is not set")
    deadline = clock() + deadline_seconds
    attempt = 0
    while True:
        left = deadline - clock()
        try:
            return fetch_credentials(url, token, timeout=max(1.0, min(REQUEST_TIMEOUT_SECONDS, left)),
                                     user_agent=user_agent, boot=boot)
        except CredentialError as error:
            if not error.retryable:
                raise
            left = deadline - clock()
            backoff = min(max_delay, 0.5 * 2 ** attempt) * random.uniform(0.8, 1.2)
            delay = max(backoff, error.retry_after or 0.0)
            if delay >= left:
                if error.retry_after is not None and error.retry_after >= left:
                    raise CredentialError(f"{error} (retry after {error.retry_after:.0f}s: past the deadline)",
                                          status=error.status, retry_after=error.retry_after) from None
                raise CredentialError(f"{error} (gave up after {deadline_seconds:.0f}s)",
                                      status=error.status, retry_after=error.retry_after) from None
            if on_retry is not None:
                on_retry(error, delay)
            sleep(delay)
            attempt += 1


def credential_process_output(answer: dict, *, early_seconds: float = DEFAULT_EARLY_SECONDS,
                              now: datetime | None = None) -> dict:
    """Exactly the five credential_process keys, with Expiration moved `early_seconds` earlier.

    Never earlier than now + 60 s (so the SDK does not refetch in a loop), and never later than the
    real expiry.
    """
    now = now or datetime.now(timezone.utc)
    real = parse_expiration(answer["Expiration"])
    reported = max(real - timedelta(seconds=early_seconds), now + timedelta(seconds=MIN_LIFETIME_SECONDS))
    reported = min(reported, real)
    return {
        "Version": 1,
        "AccessKeyId": answer["AccessKeyId"],
        "SecretAccessKey": answer["SecretAccessKey"],
        "SessionToken": answer["SessionToken"],
        "Expiration": format_expiration(reported),
    }


def _float_env(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise CredentialError(f"{name} must be a number of seconds") from None


def main() -> int:
    try:
        early = _float_env("CLOUDCTL_CREDENTIALS_EARLY_SECONDS", DEFAULT_EARLY_SECONDS)
        # The SDK kills a credential_process after one minute: stay well under it.
        deadline = min(_float_env("CLOUDCTL_CREDENTIALS_DEADLINE", DEFAULT_DEADLINE_SECONDS), 50.0)
        answer = get_credentials(deadline_seconds=deadline)
        output = credential_process_output(answer, early_seconds=early)
    except CredentialError as error:
        print(f"cloudctl credential_helper: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(output))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
