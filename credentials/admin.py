from django.contrib import admin

from .models import CredentialEvent


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
