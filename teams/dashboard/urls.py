from django.urls import path

from . import views

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
]
