from django.urls import path

from backups.urls import restore_paths

from .views import backups, deployments, teams

app_name = "dashboard"
urlpatterns = [
    path("", teams.home, name="home"),
    path("teams/", teams.teams, name="teams"),
    path("create/", teams.team_create, name="team_create"),
    path("teams/<slug:slug>/", teams.team_detail, name="team"),
    path("teams/<slug:slug>/status.json", teams.team_status, name="team_status"),
    *restore_paths(backups=backups.team_backups, request=backups.team_restore_request,
                   detail=backups.restore_detail, change=backups.team_restore_change, id_name="pk"),
    path("teams/<slug:slug>/drill/", backups.team_drill, name="team_drill"),
    path("teams/<slug:slug>/actions/<str:kind>/", teams.team_action, name="team_action"),
    path("teams/<slug:slug>/rotate-token/", teams.team_rotate_token, name="team_rotate_token"),
    # The address destroy had before every action was posted to `team_action`.
    path("teams/<slug:slug>/destroy/", teams.team_action, {"kind": "destroy"}, name="team_destroy"),
    path("teams/<slug:slug>/redeploy/", deployments.team_redeploy, name="team_redeploy"),
    path("deployments/", deployments.deployments, name="deployments"),
    path("deployments/<int:pk>/", deployments.deployment_detail, name="deployment"),
    path("deployments/<int:pk>/status.json", deployments.deployment_status, name="deployment_status"),
    path("deployments/<int:pk>/resume/", deployments.deployment_resume, name="deployment_resume"),
]
