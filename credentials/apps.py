from django.apps import AppConfig


class CredentialsConfig(AppConfig):
    name = "credentials"

    def ready(self):
        from . import checks  # noqa: F401  (registers the settings checks)
