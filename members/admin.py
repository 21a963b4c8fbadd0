"""Memberships and invitations in the admin, to read: members change them on their own pages (members/services.py
keeps the rules: the last owner, who may make owners), so the admin changes nothing. An invitation's key hash
is never shown."""

from django.contrib import admin

from teams.models import Membership

from .models import Invitation


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ["team", "user", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["team", "user"]
    search_fields = ["team__slug", "user__username", "user__email"]


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    list_display = ["team", "email", "role", "invited_by", "sent_at", "expires_at", "accepted_at", "revoked_at"]
    list_filter = ["role"]
    list_select_related = ["team", "invited_by"]
    search_fields = ["team__slug", "email"]
    fields = ["team", "email", "role", "invited_by", "created_at", "sent_at", "expires_at", "accepted_at",
              "accepted_by", "revoked_at"]
