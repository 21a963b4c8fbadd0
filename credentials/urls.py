from django.urls import path

from . import views

app_name = "private"
urlpatterns = [
    path("private/v1/credentials", views.credentials, name="credentials"),
]
