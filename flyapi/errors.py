"""The one error every Fly API call raises, with the one classification of Fly's answers (reference section 12,
docs/fly.md), so every caller retries the same way."""

from __future__ import annotations


class FlyAPIError(Exception):
    """A failed call. `http_status` is None when no response arrived. `status` is Fly's error code
    (`name_taken`, `volume_placement_capacity`, ...) when it sent one. `ambiguous` is True when a create
    may have happened despite the error: list to find it before creating again."""

    def __init__(self, http_status: int | None, status: str | None, message: str, request_id: str | None,
                 ambiguous: bool = False):
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message
        self.request_id = request_id
        self.ambiguous = ambiguous

    @property
    def capacity(self) -> bool:
        """No room: Fly's `insufficient_capacity` or `volume_placement_capacity` (412 with a volume's host full),
        or the 409 "insufficient memory available" an update can meet. Retrying the same request will not help."""
        return (self.status in ("insufficient_capacity", "volume_placement_capacity")
                or "insufficient memory" in self.message or "insufficient resources" in self.message
                or "no capacity" in self.message)

    @property
    def transient(self) -> bool:
        """The platform did not answer or asked us to slow down: no response, 408, 429 or 5xx. The same request
        may simply be sent again (a create only after looking: see `ambiguous`)."""
        return self.http_status is None or self.http_status in (408, 429) or self.http_status >= 500

    @property
    def name_taken(self) -> bool:
        """422 `name_taken` (an app), or a 422 for a Machine name already in use in the app."""
        return self.status == "name_taken" or (self.http_status == 422 and "already" in self.message)

    @property
    def lease_held(self) -> bool:
        """409: someone else holds the Machine's lease (or our nonce was missing): try again once it is free."""
        return self.http_status == 409 and not self.capacity

    @property
    def stale_version(self) -> bool:
        """412 on an update: the Machine changed since it was read (an earlier attempt's update whose answer was
        lost, say). Reading it again tells what happened."""
        return self.http_status == 412 and not self.capacity

    @property
    def retryable(self) -> bool:
        """Worth the same operation again later, after reading afresh: transient, lease held or version stale."""
        return self.transient or self.lease_held or self.stale_version

    def __str__(self) -> str:
        code = f" {self.status}" if self.status else ""
        request = f" (fly-request-id {self.request_id})" if self.request_id else ""
        ambiguous = " [ambiguous: the create may have happened]" if self.ambiguous else ""
        return f"Fly API {self.http_status or 'no response'}{code}: {self.message}{request}{ambiguous}"
