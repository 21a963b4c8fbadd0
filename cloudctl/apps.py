from django.apps import AppConfig


class CloudctlConfig(AppConfig):
    """Hosts the project-wide commands (the embedded stack) and the server's setting checks."""

    name = "cloudctl"

    def ready(self):
        from . import checks  # noqa: F401 - registers them
