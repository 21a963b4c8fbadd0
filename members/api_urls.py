from django.urls import path

from backups.urls import restore_paths

from . import api

app_name = "members_api"
urlpatterns = [
    path("teams", api.teams, name="teams"),
    path("teams/<slug:slug>", api.team, name="team"),
    path("teams/<slug:slug>/members", api.members, name="members"),
    path("teams/<slug:slug>/members/<int:user_id>", api.member, name="member"),
    path("teams/<slug:slug>/leave", api.team_leave, name="leave"),
    path("teams/<slug:slug>/transfer", api.team_transfer, name="transfer"),
    path("teams/<slug:slug>/invitations", api.invitations, name="invitations"),
    path("teams/<slug:slug>/invitations/<int:invitation_id>", api.invitation, name="invitation"),
    path("teams/<slug:slug>/invitations/<int:invitation_id>/resend", api.invitation_resend,
         name="invitation_resend"),
    path("invitations/accept", api.invitation_accept, name="invitation_accept"),
    *restore_paths(backups=api.team_backups, request=api.team_restores, detail=api.team_restore,
                   change=api.team_restore_change, id_name="restore_id", slash=""),
]
