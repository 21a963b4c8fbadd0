"""The operator dashboard: staff only, the team list's cost, the forms, and actions queued as tasks."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from credentials.models import CredentialEvent
from instances import lifecycle, services
from instances.models import Instance, TeamAction
from teams.models import Team
from teams.tokens import InvalidToken, signal_value, team_token, verify_team_token

pytestmark = pytest.mark.django_db


def page_urls(slug: str) -> list[str]:
    return ["/dashboard/", "/dashboard/teams/", "/dashboard/create/", f"/dashboard/teams/{slug}/",
            f"/dashboard/teams/{slug}/status.json"]


def action_urls(slug: str) -> list[str]:
    return [f"/dashboard/teams/{slug}/actions/{kind}/" for kind in ("provision", "start", "stop", "restart")] + [
        f"/dashboard/teams/{slug}/rotate-token/", f"/dashboard/teams/{slug}/destroy/", "/dashboard/create/"]


def seed(count: int, *, start: int = 0) -> None:
    """Teams with running instances, in two statements (no provisioning queued)."""
    now = timezone.now()
    teams = Team.objects.bulk_create(Team(slug=f"seed-{n:05d}", name=f"Seed {n}") for n in range(start, start + count))
    Instance.objects.bulk_create(
        Instance(team=team, backend="x", state=Instance.State.RUNNING, image="v1", url=f"http://127.0.0.1:{n}/",
                 backups_expected_since=now - timedelta(hours=1), last_backup_at=now - timedelta(minutes=n % 30))
        for n, team in enumerate(teams))


def test_anonymous_and_non_staff_are_refused_every_page_and_action(client, django_user_model, make_team):
    team = make_team("acme")
    old_token = team_token(team)
    for who in ("anonymous", "non-staff"):
        if who == "non-staff":
            client.force_login(django_user_model.objects.create_user("someone", password="pw-123456789"))
        for url in page_urls(team.slug):
            response = client.get(url)
            assert response.status_code == 302 and "/admin/login/" in response["Location"], (who, url)
        for url in action_urls(team.slug):
            response = client.post(url, {"confirm": team.slug, "slug": "sneaky", "region": "ord"})
            assert response.status_code == 302 and "/admin/login/" in response["Location"], (who, url)
    assert not TeamAction.objects.exists()
    assert list(Team.objects.values_list("slug", flat=True)) == ["acme"]
    assert verify_team_token(old_token) == team  # not rotated


def test_the_team_list_costs_the_same_queries_whatever_the_size(staff_client, settings):
    def list_queries(page_size: int) -> list[str]:
        settings.DASHBOARD_PAGE_SIZE = page_size
        staff_client.get("/dashboard/teams/")  # the session and permission caches warm up the same way each time
        with CaptureQueriesContext(connection) as queries:
            response = staff_client.get("/dashboard/teams/?backup=fresh&state=running&image=v1&q=seed")
        assert response.status_code == 200
        assert len(response.context["page"].object_list) == page_size
        return [query["sql"] for query in queries.captured_queries]

    seed(20)
    small = list_queries(5)
    seed(280, start=20)
    large = list_queries(100)
    # session, user, its permissions (admin context), distinct images, count, page
    assert len(small) == len(large) <= 7, large


def test_the_list_searches_and_filters(staff_client, make_team, settings):
    settings.BACKUP_STALE_AFTER = 600
    seed(3)
    stale = Team.objects.get(slug="seed-00000")
    Instance.objects.filter(team=stale).update(last_backup_at=timezone.now() - timedelta(hours=2))
    make_team("newsroom", name="The Newsroom")
    Instance.objects.filter(team__slug="seed-00002").update(state=Instance.State.FAILED, image="v2")

    def slugs(query: str) -> list[str]:
        return [team.slug for team in staff_client.get(f"/dashboard/teams/?{query}").context["page"]]

    assert slugs("q=NEWS") == ["newsroom"]
    assert slugs("q=seed+1") == ["seed-00001"]
    assert slugs("state=failed") == ["seed-00002"]
    assert slugs("image=v2") == ["seed-00002"]
    assert slugs("backup=stale") == ["seed-00000"]
    assert slugs("backup=never") == ["newsroom"]
    assert slugs("backup=fresh") == ["seed-00001", "seed-00002"]
    assert slugs("status=disabled") == []
    page = staff_client.get("/dashboard/teams/").content.decode()
    assert page.count('class="stale"') == 1
    # A bad filter value is ignored, never a 500.
    assert staff_client.get("/dashboard/teams/?state=bogus&page=x").status_code == 200


def test_home_counts_stale_backups_and_lists_alerts(staff_client, settings):
    from backups.services import check_backup_freshness

    settings.BACKUP_STALE_AFTER = 600
    seed(4)
    Instance.objects.filter(team__slug__in=["seed-00001", "seed-00003"]).update(last_backup_at=None)
    check_backup_freshness(actor="test")
    page = staff_client.get("/dashboard/")
    assert page.context["summary"].stale_backups == 2
    assert page.context["summary"].instances_by_state["running"] == 4
    assert "seed-00001" in page.content.decode() and "backup_stale" in page.content.decode()


def test_create_form_validates_slug_and_region_then_queues_provisioning(staff_client, settings,
                                                                       django_capture_on_commit_callbacks):
    settings.REGIONS = ["ord", "ams"]
    for data, field in [({"slug": "Not A Label", "region": "ord"}, "slug"),
                        ({"slug": "admin", "region": "ord"}, "slug"),
                        ({"slug": "acme", "region": "mars"}, "region")]:
        response = staff_client.post("/dashboard/create/", data)
        assert response.status_code == 400 and response.context["form"].errors[field], data
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post("/dashboard/create/", {"slug": "acme", "name": "Acme", "region": "ams"})
    assert response.status_code == 302 and response["Location"] == "/dashboard/teams/acme/"
    team = Team.objects.get(slug="acme")
    assert (team.name, team.region) == ("Acme", "ams")
    assert DBTaskResult.objects.get().args_kwargs["args"] == [team.pk]
    taken = staff_client.post("/dashboard/create/", {"slug": "acme", "region": "ord"})
    assert taken.status_code == 400 and "already exists" in str(taken.context["form"].errors["slug"])


def test_an_action_is_queued_then_run_by_the_task_with_its_outcome(staff_client, make_team, monkeypatch,
                                                                    django_capture_on_commit_callbacks):
    team = make_team("acme")
    calls = []
    monkeypatch.setattr(lifecycle, "stop_instance", lambda team, *, actor: calls.append(team))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post("/dashboard/teams/acme/actions/stop/")
    assert response.status_code == 302
    action = TeamAction.objects.get()
    assert (action.kind, action.status, action.requested_by) == ("stop", "queued", "operator")
    task = DBTaskResult.objects.get(task_path="instances.tasks.run_team_action")
    assert task.args_kwargs["args"] == [action.pk] and calls == []  # nothing ran inside the request

    assert lifecycle.run_action(action.pk).status == TeamAction.Status.SUCCEEDED
    assert calls == [team]
    status = staff_client.get("/dashboard/teams/acme/status.json").json()
    assert status["actions"][0] == {"id": action.pk, "kind": "stop", "status": "succeeded", "error": "",
                                    "done": True}

    def broken(team, *, actor):
        raise RuntimeError("backend unreachable")

    monkeypatch.setattr(lifecycle, "stop_instance", broken)
    failed = services.request_action(team, "stop", actor="operator")
    assert lifecycle.run_action(failed.pk).error == "backend unreachable"
    assert staff_client.post("/dashboard/teams/acme/actions/reboot/").status_code == 302
    missing = staff_client.get("/dashboard/teams/nope/status.json")
    assert (missing.status_code, missing.json()) == (404, {"error": "no such team"})
    assert TeamAction.objects.count() == 2


def test_rotate_token_revokes_at_once_and_queues_a_restart(staff_client, make_team):
    team = make_team("acme")
    Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING)
    old_token, old_signal = team_token(team), signal_value(team)
    response = staff_client.post("/dashboard/teams/acme/rotate-token/", follow=True)
    with pytest.raises(InvalidToken):
        verify_team_token(old_token)
    assert TeamAction.objects.get().kind == "restart"
    team.refresh_from_db()
    page = response.content.decode()
    assert "generation 2" in page
    assert staff_client.get(f"/private/v1/teams/{team.pk}/signals/backup/{old_signal}").status_code == 403
    for secret in (team_token(team), old_token, signal_value(team), old_signal):
        assert secret not in page
        assert secret not in staff_client.get("/dashboard/teams/acme/status.json").content.decode()


def test_destroy_needs_the_typed_slug(staff_client, make_team):
    make_team("acme")
    staff_client.post("/dashboard/teams/acme/destroy/", {"confirm": "acm"})
    assert not TeamAction.objects.exists()
    staff_client.post("/dashboard/teams/acme/destroy/", {"confirm": "acme"})
    assert TeamAction.objects.get().kind == "destroy"


def test_team_page_timeline_shows_steps_issuances_refusals_and_signals(staff_client, make_team):
    team = make_team("acme")
    instance = Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING, url="http://127.0.0.1:1/")
    from teams import timeline

    timeline.record(team, "step:machine", "machine ready", actor="test")
    # A crash log tail may carry Litestream's heartbeat URL: the page never shows its signed value.
    timeline.record(team, "crashed", f"heartbeat ping failed url=http://x/private/v1/teams/{team.pk}/signals/backup/"
                                     f"{signal_value(team)}", actor="test", is_error=True)
    CredentialEvent.objects.create(kind="issued", team=team, access_key_id="ASIAEXAMPLE", response_format="x")
    staff_client.get(f"/private/v1/teams/{team.pk}/signals/backup/forged.value")
    staff_client.get(f"/private/v1/teams/{team.pk}/signals/backup/{signal_value(team)}")
    page = staff_client.get("/dashboard/teams/acme/").content.decode()
    for expected in ("step:machine", "ASIAEXAMPLE", "backup signal refused", "http://127.0.0.1:1/",
                     f"https://acme.{'teams.example.com'}/", "/signals/backup/&lt;redacted&gt;"):
        assert expected in page, expected
    assert signal_value(team) not in page
    instance.refresh_from_db()
    assert instance.last_backup_at is not None
