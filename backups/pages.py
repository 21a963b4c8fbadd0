"""What the console's and the members' restore pages share besides their template fragments (templates/backups/):
the window part of the backups page, a restore's preview, how a plan or request the replica or the restore's state
refused is shown, and the status each answers with. The views pass what reads, as their actor may read it."""

from collections.abc import Callable

from .forms import RestorePointForm
from .models import Restore
from .preview import PreviewTable, PreviewUnavailable
from .replicas import UnreadableReplica
from .restore import RestoreRefused
from .selectors import offered_restore_changes
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


def window_context(query, plan: Callable) -> tuple[dict, int]:
    """The backups page's window from its GET `query` (RestorePointForm): the form, and the window and plan that
    `plan(database=, timestamp=, txid=)` (`restore.plan_restore` for the page's team and actor) reads, or why
    not; and the page's status."""
    form = RestorePointForm(query or None)
    if query and not form.is_valid():
        return {"form": form}, 400
    point = form.cleaned_data if form.is_bound else {"database": form.fields["database"].initial}
    context = {"form": form, "database": point["database"]}
    try:
        context["window"], context["plan"] = plan(database=point["database"], timestamp=point.get("timestamp"),
                                                  txid=point.get("txid"))
    except RESTORE_REFUSALS as refusal:
        return context, show_refusal(context, refusal, empty_status=200)  # nothing to restore yet is a fact
    return context, 200


def preview_context(restore: Restore, preview: Callable[[], list[PreviewTable]]) -> tuple[dict, int]:
    """A restore's page: the restore, what its state allows, and the `preview()`'s tables or why there are none;
    and the page's status (503 only for a preview that should be running and does not answer as it should)."""
    context = {"restore": restore, "restores": [(restore, offered_restore_changes(restore))]}
    try:
        context["tables"] = preview()
    except PreviewUnavailable as unavailable:
        context["unavailable"] = str(unavailable)
        return context, 503 if restore.state == Restore.State.PREVIEW_RUNNING else 200
    return context, 200
