from django.urls import path

from . import deploy_views, views

app_name = "dashboard"
urlpatterns = [
    path("", views.home, name="home"),
    path("teams/", views.teams, name="teams"),
    path("create/", views.team_create, name="team_create"),
    path("teams/<slug:slug>/", views.team_detail, name="team"),
    path("teams/<slug:slug>/status.json", views.team_status, name="team_status"),
    path("teams/<slug:slug>/actions/<str:kind>/", views.team_action, name="team_action"),
    path("teams/<slug:slug>/rotate-token/", views.team_rotate_token, name="team_rotate_token"),
    path("teams/<slug:slug>/destroy/", views.team_destroy, name="team_destroy"),
    path("teams/<slug:slug>/redeploy/", deploy_views.team_redeploy, name="team_redeploy"),
    path("deployments/", deploy_views.deployments, name="deployments"),
    path("deployments/<int:pk>/", deploy_views.deployment_detail, name="deployment"),
    path("deployments/<int:pk>/status.json", deploy_views.deployment_status, name="deployment_status"),
    path("deployments/<int:pk>/resume/", deploy_views.deployment_resume, name="deployment_resume"),
]
