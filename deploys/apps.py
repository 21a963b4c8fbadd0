from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "deploys"

    def ready(self):
        from instances import rollouts

        from . import checks  # noqa: F401  (registers the settings checks)
        from .selectors import fleet_image, team_ids_being_deployed

        # New instances start on the fleet's image; the reconciler leaves alone the teams a deployment is changing.
        rollouts.plug_in(image=fleet_image, being_deployed=team_ids_being_deployed)
