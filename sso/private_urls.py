from django.urls import path

from . import views

app_name = "sso_private"
urlpatterns = [
    path("private/v1/sso/token", views.token, name="token"),
    path("private/v1/sso/actor", views.actor, name="actor"),
]
