from django.apps import AppConfig


class SsoConfig(AppConfig):
    """Single sign-on to a team's instance: the authorize endpoint, its codes, and the private API on which an
    instance redeems a code and re-validates its actors (docs/sso.md)."""

    name = "sso"

    def ready(self):
        from django.contrib.auth.signals import user_logged_out

        from . import checks  # noqa: F401  (registers the cookie checks)
        from .receivers import end_instance_sessions_on_sign_out

        user_logged_out.connect(end_instance_sessions_on_sign_out, dispatch_uid="sso.end_instance_sessions")
