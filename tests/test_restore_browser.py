"""A restore's confirmation in a real browser (Playwright driving Debian's Chromium) against the live server: the
staff administrator opens the team's backups, the restore's preview (`backups.preview.preview_tables` faked: the
real preview is tested end to end elsewhere), confirms the swap with the page's own form (its CSRF token), and is
back on the backups page with the swap queued."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from backups.models import Restore
from backups.preview import PreviewTable
from instances.models import Instance
from teams.permissions import ensure_groups

from .staff import with_totp
from .test_browser import CHROMIUM, PASSWORD, browser, log_in  # noqa: F401 (browser: the fixture)

pytestmark = [
    pytest.mark.slow, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing: apt-get install -y chromium"),
]


def test_staff_preview_a_restore_and_confirm_its_swap(live_server, browser, make_team, monkeypatch):  # noqa: F811
    team = make_team("acme")
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
    restore = Restore.objects.create(team=team, database="data.db", target_txid=3, target_time=timezone.now(),
                                     requested_by="someone", state=Restore.State.PREVIEW_RUNNING,
                                     preview_url="http://127.0.0.1:9/")
    monkeypatch.setattr("backups.preview.preview_tables", lambda shown: [
        PreviewTable(name="notes", count=10, columns=["id", "body"], rows=[["1", "note 1"], ["2", "note 2"]])])
    operator = with_totp(get_user_model().objects.create_user("operator", password=PASSWORD, is_staff=True))
    ensure_groups()  # a transactional test: an earlier one's flush may have emptied the groups' table
    operator.groups.add(Group.objects.get(name="Fleet administrator"))
    page = browser.new_page()
    log_in(page, live_server.url, "operator", f"/dashboard/teams/{team.slug}/backups/", totp=True)
    page.wait_for_selector(f"#restore-{restore.pk}")

    page.click(f"#restore-{restore.pk} a")
    page.wait_for_url(f"{live_server.url}/dashboard/teams/{team.slug}/restores/{restore.pk}/")
    assert "10 rows, the first 2 shown" in page.inner_text("#preview")
    assert page.inner_text("#preview table tbody tr:nth-child(2)").split() == ["2", "note", "2"]

    page.click(f"#restore-{restore.pk}-confirm_swap")
    page.wait_for_url(f"{live_server.url}/dashboard/teams/{team.slug}/backups/")
    assert f"Restore {restore.pk}: its swap is queued." in page.inner_text("body")
    assert page.get_attribute(f"#restore-{restore.pk}", "data-state") == Restore.State.SWAPPING
    assert page.query_selector(f"#restore-{restore.pk}-cancel") is None  # nothing to cancel once swapping
    assert [result.args_kwargs["args"] for result in DBTaskResult.objects.filter(
        task_path="backups.tasks.run_restore_task")] == [[restore.pk, "operator"]]
