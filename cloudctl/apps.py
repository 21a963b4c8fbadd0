from django.apps import AppConfig


class CloudctlConfig(AppConfig):
    """Hosts the project-wide commands (the embedded stack), the cache table's migration, the sign-in's pages,
    and the sign-in and server setting checks."""

    name = "cloudctl"

    def ready(self):
        from . import checks  # noqa: F401  (registers the setting checks)
