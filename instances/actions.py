"""The operator actions on a team's instance, declared once.

`services.request_action` and `lifecycle.run_action`, `manage.py instance <slug> <action>` (its choices and
help), the dashboard's buttons and the admin's actions all read `ACTIONS`: a new action is a `TeamAction.Kind`
(with its `action:<kind>` timeline kind) and one entry here.

Each entry names the service that does it by dotted path, resolved when it runs: the services read this
registry, so it cannot import them.
"""

from dataclasses import dataclass

from django.utils.module_loading import import_string

from teams.models import Team, TeamEvent
from teams.permissions import DESTROY_INSTANCE, OPERATE_INSTANCE

from .models import TeamAction


@dataclass(frozen=True)
class Action:
    kind: TeamAction.Kind
    label: str  # the button's text
    help: str  # what it does: the command's help, the button's tooltip, the admin's description
    run: str  # dotted path of the service doing it, called as run(team, *, actor=...)
    permission: str  # what a user needs to request it (a process started from a shell needs none)
    # When set, shown above a field where the operator types the team's slug (the command: --confirm SLUG);
    # such an action is never offered in bulk (the admin's list).
    confirm_text: str = ""

    @property
    def requested_event(self) -> TeamEvent.Kind:
        """The timeline's record that someone asked for it."""
        return TeamEvent.Kind(f"action:{self.kind}")

    def perform(self, team: Team, *, actor: str) -> None:
        """Do it now, here (the worker, for a queued `TeamAction`; a command)."""
        import_string(self.run)(team, actor=actor)


ACTIONS = (
    Action(TeamAction.Kind.PROVISION, "Provision", "create what is missing, then start it (safe at any time)",
           "instances.provisioning.provision", OPERATE_INSTANCE),
    Action(TeamAction.Kind.START, "Start", "start the instance", "instances.lifecycle.start_instance", OPERATE_INSTANCE),
    Action(TeamAction.Kind.STOP, "Stop", "stop the instance and keep it stopped", "instances.lifecycle.stop_instance",
           OPERATE_INSTANCE),
    Action(TeamAction.Kind.RESTART, "Restart", "stop the instance, then start it with the current token",
           "instances.lifecycle.restart_instance", OPERATE_INSTANCE),
    Action(TeamAction.Kind.DESTROY, "Destroy", "remove the instance's compute and volume; its backups are kept",
           "instances.lifecycle.destroy_instance", DESTROY_INSTANCE,
           confirm_text="Destroy removes the instance's compute and volume; its backups are kept"),
)


def action_for(kind: str) -> Action:
    """The registered action of `kind` (ValueError for a kind not registered)."""
    for action in ACTIONS:
        if action.kind == kind:
            return action
    raise ValueError(f"no action {kind!r}: the actions are {', '.join(action.kind for action in ACTIONS)}")


def permitted_actions(user) -> list[Action]:
    """The actions `user` may request, in the registry's order (the buttons a team page shows)."""
    return [action for action in ACTIONS if user.has_perm(action.permission)]
