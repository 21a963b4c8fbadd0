from django.apps import AppConfig


class CloudctlConfig(AppConfig):
    """Hosts the project-wide commands (the embedded stack), the cache table's migration and the sign-in's pages."""

    name = "cloudctl"

    def ready(self):
        from . import checks  # noqa: F401  (registers the sign-in settings checks)
