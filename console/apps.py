from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator's rooms: the dashboard (/dashboard/) and the admin's customisation, over every other app."""

    name = "console"
