from django.apps import AppConfig


class CloudctlConfig(AppConfig):
    """Hosts the project-wide commands (the embedded stack)."""

    name = "cloudctl"
