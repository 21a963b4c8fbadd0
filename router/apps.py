from django.apps import AppConfig


class RouterConfig(AppConfig):
    name = "router"
    verbose_name = "Router: every team at its own subdomain"

    def ready(self):
        from . import checks  # noqa: F401 (registers them)
