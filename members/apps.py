from django.apps import AppConfig


class MembersConfig(AppConfig):
    """Teams for their members: my teams, creating a team, members, roles and invitations (pages and JSON)."""

    name = "members"
