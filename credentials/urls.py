from django.urls import path, re_path

from . import views

app_name = "private"
urlpatterns = [
    path("private/v1/credentials", views.credentials, name="credentials"),
    # The value is URL-safe base64 and dots (itsdangerous); anything else is not ours: a JSON 404.
    re_path(r"^private/v1/teams/(?P<team_id>[0-9]{1,18})/signals/(?P<signal>backup|shutdown|fingerprint)/(?P<value>[A-Za-z0-9_.-]{1,512})$",
            views.instance_signal, name="signal"),
]
