"""The dashboard in a real browser (Playwright driving Debian's Chromium) against the whole local stack: the
live server, a real `db_worker` process, the embedded router and the local backend's real instances (Datasette +
Litestream)."""

from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from credentials.models import CredentialEvent
from instances.models import Instance
from teams.models import Team
from teams.permissions import ensure_groups

from .instance_sso import TESTER, actor_cookie, as_tester, volume_secret
from .routing import as_router
from .staff import totp_code, with_totp
from .test_instance import admin_client, needs_instance_venv
from .test_local_backend import local  # noqa: F401 (the fixture)
from .test_router_stack import queue_team, routed  # noqa: F401 (routed: the router and a worker)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
PASSWORD = "operator-password-123"
START_TIMEOUT_MS = 120_000

pytestmark = [
    needs_instance_venv, pytest.mark.slow, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing: apt-get install -y chromium"),
]


@contextmanager
def chromium(monkeypatch, *flags: str):
    """Debian's Chromium under Playwright, with `flags` beside the usual ones."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls between steps are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_FLAGS, *flags])
        yield browser
        browser.close()


@pytest.fixture
def browser(monkeypatch):
    with chromium(monkeypatch) as browser:
        yield browser


def log_in(page, base: str, username: str, next_path: str, *, totp: bool = False) -> None:
    """Through the admin's login URL, as the dashboard sends people: the password, then the TOTP code if any."""
    page.goto(f"{base}/admin/login/?next={next_path}")
    page.fill("#id_login", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    if totp:
        page.fill("#id_code", totp_code())
        page.click("#content button[type=submit]")


def sign_in_to_team(page, team, secret: str) -> None:
    """The browser signed in to the team's instance (whose Datasette signs with `secret`) as the tester the `local`
    fixture's fake of the sign-in API confirms: the single sign-on itself is tests/test_sso_browser.py's."""
    page.context.add_cookies([{"name": "ds_actor", "url": team.subdomain_url,
                               "value": actor_cookie(secret, user_id=TESTER, grant=f"grant-of-{TESTER}")}])


def wait_for_state(page, state: str) -> None:
    page.wait_for_selector(f'#instance-state[data-state="{state}"]', timeout=START_TIMEOUT_MS)


def test_staff_create_watch_open_rotate_destroy(live_server, routed, browser, s3_env, settings):  # noqa: F811
    base = live_server.url
    operator = with_totp(get_user_model().objects.create_user("operator", password=PASSWORD, is_staff=True))
    ensure_groups()  # a transactional test: an earlier one's flush may have emptied the groups' table
    operator.groups.add(Group.objects.get(name="Fleet administrator"))
    page = browser.new_page()
    log_in(page, base, "operator", "/dashboard/create/", totp=True)

    page.fill("#id_slug", "e2e-news")
    page.fill("#id_name", "E2E Newsroom")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/dashboard/teams/e2e-news/")
    # A marker the page keeps only if it is never reloaded: the progress below arrives by polling.
    page.evaluate("window.notReloaded = true")
    wait_for_state(page, "running")
    page.wait_for_function("document.getElementById('last-backup').textContent !== 'never'", timeout=60_000)
    assert page.evaluate("window.notReloaded") is True
    team = Team.objects.get(slug="e2e-news")
    assert Instance.objects.get(team=team).last_backup_at is not None  # Litestream's heartbeat arrived

    datasette_url = page.get_attribute("#datasette-link", "href")
    sign_in_to_team(page, team, volume_secret(Instance.objects.get(team=team).resources["volume"]))
    page.click("#datasette-link")
    page.wait_for_url(datasette_url)
    assert "data" in page.inner_text("body")  # Datasette lists the team's database
    page.go_back()

    rotated_at = timezone.now()
    page.click("#action-rotate-token")
    page.wait_for_selector("text=Token rotated to generation 2")
    page.wait_for_function(
        "document.querySelector('#action-list li')?.textContent.startsWith('restart: succeeded')",
        timeout=START_TIMEOUT_MS)
    wait_for_state(page, "running")
    assert page.inner_text("#token-generation") == "2"
    team.refresh_from_db()
    instance = Instance.objects.get(team=team)
    signed_in = {**as_router(team), **as_tester(instance.resources["volume"])}
    assert httpx.get(instance.url, timeout=10, headers=signed_in).status_code == 200
    # The restarted instance got its credentials with the new token.
    assert CredentialEvent.objects.filter(team=team, kind="issued", created_at__gte=rotated_at).exists()
    # No exchange was refused (a heartbeat the old instance sent between the rotation and its stop may be).
    assert not CredentialEvent.objects.filter(team=team, kind="refused", signal="").exists()

    page.fill("#id_confirm", "e2e-news")
    page.click("#action-destroy")
    wait_for_state(page, "destroyed")
    assert not (Path(settings.LOCAL_INSTANCES_DIR) / f"team-{team.pk}").exists()
    kept = admin_client(s3_env).list_objects_v2(Bucket=s3_env.bucket, Prefix=team.storage_prefix)
    assert kept.get("KeyCount", 0) > 0  # backups are kept


def test_anonymous_and_non_staff_browsers_are_sent_to_the_login(live_server, browser, make_team):
    team = make_team("acme")
    get_user_model().objects.create_user("customer", password=PASSWORD)
    anonymous = browser.new_page()
    for path in ("/dashboard/", "/dashboard/teams/", f"/dashboard/teams/{team.slug}/", "/dashboard/create/"):
        anonymous.goto(f"{live_server.url}{path}")
        assert "/admin/login/" in anonymous.url
    customer = browser.new_context().new_page()
    log_in(customer, live_server.url, "customer", f"/dashboard/teams/{team.slug}/")
    assert "/admin/login/" in customer.url
    assert "correct username and password for a staff account" in customer.content()
    assert "Rotate token" not in customer.content()


def test_a_team_opened_at_its_name_wakes_after_a_stop(routed, browser, settings):  # noqa: F811
    """http://<slug>.localhost:<port>/ in Chromium (which resolves *.localhost to loopback): the team's Datasette;
    stopped by an operator, a reload wakes it through the router and it answers."""
    from instances.lifecycle import stop_instance

    secret = "e2e-wake-datasette-secret"
    team = queue_team("e2e-wake", settings, datasette_secret=secret)
    page = browser.new_page()
    sign_in_to_team(page, team, secret)
    page.set_default_timeout(START_TIMEOUT_MS)
    url = f"http://e2e-wake.localhost:{routed.port}/"
    assert team.subdomain_url == url  # what the dashboard and the admin link
    # While it is set up, the router's page refreshes by itself until the team's Datasette answers.
    page.goto(url)
    page.wait_for_selector("text=data")
    assert "Datasette" in page.content()
    stop_instance(team, actor="test")
    page.reload()  # held by the router while the worker starts the instance
    page.wait_for_selector("text=data")
    assert "Datasette" in page.content()
    assert Instance.objects.get(team=team).state == Instance.State.RUNNING
