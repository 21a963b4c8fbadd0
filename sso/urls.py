from django.urls import path

from . import views

app_name = "sso"
urlpatterns = [
    path("sso/authorize", views.authorize, name="authorize"),
]
