"""What the console's and the members' restore pages share besides their template fragments (templates/backups/):
how a plan or request the replica or the restore's state refused is shown, and the status the page answers with."""

from .replicas import UnreadableReplica
from .restore import RestoreRefused
from .window import EmptyReplica, OutsideWindow

# What the pages say once a change a person asked of a restore (restore_requests) is recorded and queued.
CHANGE_DONE = {"confirm_swap": "its swap is queued", "swap_back": "its swap back is queued", "cancel": "cancelled"}

# What a plan (`restore.plan_restore`) or a restore request (`restore_requests`) may refuse with; each message is
# safe to show.
RESTORE_REFUSALS = (OutsideWindow, EmptyReplica, UnreadableReplica, RestoreRefused)


def show_refusal(context: dict, refusal: Exception, *, empty_status: int) -> int:
    """Put `refusal` (one of RESTORE_REFUSALS) into a page's context (`refusal` and the `nearest` valid points,
    `empty` or `unreadable`); the HTTP status the page answers with (`empty_status` for an empty replica: a fact
    when reading the window, a conflict when asking to restore it)."""
    if isinstance(refusal, OutsideWindow):
        context.update(refusal=str(refusal), nearest=refusal.nearest)
        return 400
    if isinstance(refusal, EmptyReplica):
        context["empty"] = str(refusal)
        return empty_status
    if isinstance(refusal, UnreadableReplica):
        context["unreadable"] = str(refusal)
        return 503
    context["refusal"] = str(refusal)
    return 409
