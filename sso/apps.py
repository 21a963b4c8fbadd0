from django.apps import AppConfig


class SsoConfig(AppConfig):
    """Single sign-on to a team's instance: the authorize endpoint, its codes, and the private API on which an
    instance redeems a code and re-validates its actors (docs/sso.md)."""

    name = "sso"
