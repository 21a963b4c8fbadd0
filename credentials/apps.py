from django.apps import AppConfig


class CredentialsConfig(AppConfig):
    name = "credentials"

    def ready(self):
        from backups import replicas

        from . import checks  # noqa: F401  (registers the settings checks)
        from .broker import BrokerUnavailable
        from .services import mint_read_only_credentials

        # The control plane reads team replicas (restorable windows, restores, drills) with these.
        replicas.plug_in(mint_read_only=mint_read_only_credentials, failure=BrokerUnavailable)
