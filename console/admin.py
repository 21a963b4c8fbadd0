from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.utils.html import format_html

from credentials.models import CredentialEvent
from instances.actions import Action, permitted_actions
from instances.services import request_action, request_provisioning, rotate_token_and_restart
from teams.models import Team
from teams.permissions import ROTATE_TOKEN
from teams.services import set_team_status

# The dashboard (console/views/) wears the admin's templates: one name for both.
admin.site.site_header = admin.site.site_title = "cloudctl"


def requester_of(action: Action):
    """An admin action that queues `action` for each selected team, as the team page's button does."""
    def request_for_each(modeladmin, request, queryset):
        for team in queryset:
            request_action(team, action.kind, actor=request.user)
        modeladmin.message_user(request, f"{action.label} queued for {len(queryset)} team(s).", messages.SUCCESS)

    return request_for_each


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "status", "instance_state", "instance_link", "storage_prefix",
                    "token_generation", "created_at"]
    list_filter = ["status", "instance__state"]
    list_select_related = ["instance"]
    search_fields = ["slug", "name"]
    readonly_fields = ["storage_prefix", "token_generation", "created_at", "updated_at"]
    actions = ["rotate_tokens", "disable", "enable"]

    @admin.display(description="instance", ordering="instance__state")
    def instance_state(self, team):
        instance = getattr(team, "instance", None)
        return instance.get_state_display() if instance else "not provisioned"

    @admin.display(description="Datasette")
    def instance_link(self, team):
        instance = getattr(team, "instance", None)
        # The link is the router's: the instance's own address serves only its router's requests.
        if not (instance and instance.url):
            return "-"
        return format_html('<a href="{0}">{0}</a> (instance at {1})', team.subdomain_url, instance.url)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:  # a team added here is provisioned like one made by `create_team`
            request_provisioning(obj, actor=request.user.get_username())

    def get_actions(self, request):
        """The admin's own actions and the operator actions of `instances.actions` the user may request; one that
        asks for the team's slug typed is left to the team page."""
        actions = super().get_actions(request)
        if IS_POPUP_VAR in request.GET:  # a popup has no action selector
            return actions
        for action in permitted_actions(request.user):
            if not action.confirm_text:
                name = f"request_{action.kind}"
                actions[name] = (requester_of(action), name, f"{action.label}: {action.help}")
        return actions

    def get_readonly_fields(self, request, obj=None):
        # The slug is the team's subdomain: fixed once created.
        return self.readonly_fields + (["slug"] if obj else [])

    # Each action declares its permission: the admin shows it only to users who have it and refuses it to
    # anyone else; the services check it again.
    def has_rotate_token_permission(self, request):
        return request.user.has_perm(ROTATE_TOKEN)

    @admin.action(description="Rotate token (revokes the current one; the instance restarts with the new one)",
                  permissions=["rotate_token"])
    def rotate_tokens(self, request, queryset):
        for team in queryset:
            rotate_token_and_restart(team, actor=request.user)
        self.message_user(request, f"Rotated {queryset.count()} token(s).", messages.SUCCESS)

    @admin.action(description="Disable (no more credentials)", permissions=["change"])
    def disable(self, request, queryset):
        for team in queryset:
            set_team_status(team, Team.Status.DISABLED, actor=request.user)

    @admin.action(description="Enable", permissions=["change"])
    def enable(self, request, queryset):
        for team in queryset:
            set_team_status(team, Team.Status.ACTIVE, actor=request.user)


@admin.register(CredentialEvent)
class CredentialEventAdmin(admin.ModelAdmin):
    """The audit trail: read-only, append-only."""

    list_display = ["created_at", "kind", "team", "claimed_team_id", "reason", "request_count", "access_key_id",
                    "expiration", "client_ip", "response_format"]
    list_filter = ["kind", "reason", "response_format"]
    search_fields = ["team__slug", "access_key_id", "client_ip", "token_fingerprint"]
    list_select_related = ["team"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
