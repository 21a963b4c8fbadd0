from django.urls import path

from backups.urls import restore_paths

from . import views

app_name = "members"
urlpatterns = [
    path("teams/", views.teams, name="teams"),
    path("new-team/", views.team_create, name="team_create"),
    path("invitation/", views.invitation, name="invitation"),
    path("profile/", views.profile, name="profile"),
    path("teams/<slug:slug>/", views.team, name="team"),
    path("teams/<slug:slug>/status.json", views.team_status, name="team_status"),
    path("teams/<slug:slug>/invitations/", views.invite, name="invite"),
    path("teams/<slug:slug>/invitations/<int:invitation_id>/resend/", views.resend_invitation,
         name="resend_invitation"),
    path("teams/<slug:slug>/invitations/<int:invitation_id>/revoke/", views.revoke_invitation,
         name="revoke_invitation"),
    path("teams/<slug:slug>/members/<int:user_id>/role/", views.change_role, name="change_role"),
    path("teams/<slug:slug>/members/<int:user_id>/remove/", views.remove_member, name="remove_member"),
    path("teams/<slug:slug>/transfer/", views.transfer_ownership, name="transfer_ownership"),
    path("teams/<slug:slug>/leave/", views.leave, name="leave"),
    *restore_paths(backups=views.backups, request=views.restore_request, detail=views.restore,
                   change=views.restore_change, id_name="restore_id"),
]
