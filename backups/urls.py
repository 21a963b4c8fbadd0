"""The restore URLs a team's restores answer on, under `teams/<slug>/`: the console's pages, the members' pages
and the members' JSON API each mount them with their own views (and the API without trailing slashes)."""

from django.urls import path

# A change a person asks of a restore: its URL's last part, and the change's name the views are called with.
CHANGE_PATHS = {"confirm-swap": "confirm_swap", "swap-back": "swap_back", "cancel": "cancel"}


def restore_paths(*, backups, request, detail, change, id_name: str, slash: str = "/") -> list:
    """`backups` (the window and the team's restores), `request` (ask for a restore), `detail` (one restore, called
    with `id_name`) and `change` (called with `id_name` and `change=` one of CHANGE_PATHS' values)."""
    restore = f"teams/<slug:slug>/restores/<int:{id_name}>"
    return [
        path(f"teams/<slug:slug>/backups{slash}", backups, name="team_backups"),
        path(f"teams/<slug:slug>/restores{slash}", request, name="team_restore_request"),
        path(f"{restore}{slash}", detail, name="team_restore"),
        *(path(f"{restore}/{part}{slash}", change, {"change": name}, name=f"restore_{name}")
          for part, name in CHANGE_PATHS.items()),
    ]
