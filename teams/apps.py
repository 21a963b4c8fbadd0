from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "teams"

    def ready(self):
        from . import checks  # noqa: F401  (registers the settings checks)
