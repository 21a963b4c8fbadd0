from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"

    def ready(self):
        from . import checks  # noqa: F401  (registers the settings checks)
