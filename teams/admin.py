from django.contrib import admin, messages

from credentials.tokens import rotate_team_token

from .models import Team
from .services import set_team_status


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "status", "storage_prefix", "token_generation", "created_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    readonly_fields = ["storage_prefix", "token_generation", "created_at", "updated_at"]
    actions = ["rotate_tokens", "disable", "enable"]

    def get_readonly_fields(self, request, obj=None):
        # The slug is the team's subdomain: fixed once created.
        return self.readonly_fields + (["slug"] if obj else [])

    @admin.action(description="Rotate token (revokes the current one)")
    def rotate_tokens(self, request, queryset):
        for team in queryset:
            rotate_team_token(team)
        self.message_user(request, f"Rotated {queryset.count()} token(s).", messages.SUCCESS)

    @admin.action(description="Disable (no more credentials)")
    def disable(self, request, queryset):
        for team in queryset:
            set_team_status(team, Team.Status.DISABLED)

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        for team in queryset:
            set_team_status(team, Team.Status.ACTIVE)
