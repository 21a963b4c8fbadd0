"""The fleet's backup settings, checked at `manage.py check` (and every start) rather than at an instance's boot."""

import re

from django.conf import settings
from django.core import checks

# What instance/entrypoint.py accepts and Litestream parses (a Go duration of one unit; Litestream takes no days).
RETENTION = re.compile(r"[1-9][0-9]*[smh]")


@checks.register()
def backup_settings(app_configs, **kwargs):
    problems = []
    if not RETENTION.fullmatch(settings.BACKUP_RETENTION):
        problems.append(checks.Error(
            f"CLOUDCTL_BACKUP_RETENTION is {settings.BACKUP_RETENTION!r}: use a positive number and s, m or h "
            "(Litestream takes no days: 7 days is 168h).", id="backups.E001"))
    if settings.RESTORE_KEEP_DAYS < 0:
        problems.append(checks.Error(
            f"CLOUDCTL_RESTORE_KEEP_DAYS is {settings.RESTORE_KEEP_DAYS}: the days a replaced volume is kept after a "
            "restore's swap cannot be negative (0 deletes it at the next tend).", id="backups.E002"))
    return problems
