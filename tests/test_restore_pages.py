"""The restore pages (issue 16): the console's (staff with `backups.restore_database`; "drill now" with
`backups.run_drill`) and the members' (a team's owners and admins only). Requesting, confirming the swap, swapping
back and cancelling only record and queue (backups.restore_requests); the preview page shows
`backups.preview.preview_tables` (faked here: the real preview is tested end to end elsewhere). Bad input, another
team's restore and a state that refuses are clear 4xx, never a 500; nothing changes on a refusal."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from backups.models import Restore, RestoreDrill
from backups.preview import PreviewTable, PreviewUnavailable
from backups.replicas import replica_window
from instances.models import Instance
from teams.models import Membership
from teams.permissions import ensure_groups

from .members import make_member
from .staff import PASSWORD, force_staff_login
from .test_permissions import grant
from .test_restore_dry_run import replicated  # noqa: F401  (the fixture: rows at t1, t2, t3 on the local S3)

pytestmark = pytest.mark.django_db

RESTORE_TASK = "backups.tasks.run_restore_task"
DRILL_TASK = "backups.tasks.drill_team_task"
CHANGES = ("confirm-swap", "swap-back", "cancel")


def make_restore(team, state=Restore.State.REQUESTED, **fields) -> Restore:
    return Restore.objects.create(team=team, database="data.db", target_txid=3, target_time=timezone.now(),
                                  requested_by="test", state=state, **fields)


def queued(task_path: str) -> list[list]:
    return [result.args_kwargs["args"] for result in DBTaskResult.objects.filter(task_path=task_path)]


def states(*restores) -> list[str]:
    return [Restore.objects.get(pk=restore.pk).state for restore in restores]


def console_url(team, name="team_backups", *args) -> str:
    return reverse(f"dashboard:{name}", args=[team.slug, *args])


def members_url(team, name="team_backups", *args) -> str:
    return reverse(f"members:{name}", args=[team.slug, *args])


def change_url(namespace: str, team, restore_id: int, change: str) -> str:
    return reverse(f"{namespace}:restore_{change.replace('-', '_')}", args=[team.slug, restore_id])


# --- the console ----------------------------------------------------------------------------------------------

def test_a_staff_user_without_restore_database_is_refused_and_nothing_changes(client, django_user_model, make_team):
    team = make_team("acme")
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
    previewing = make_restore(team, Restore.State.PREVIEW_RUNNING)
    swapped = make_restore(team, Restore.State.SWAPPED, swapped_at=timezone.now())
    staff = django_user_model.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    grant(staff, "teams.view_team")
    force_staff_login(client, staff)
    for restore in (previewing, swapped):
        assert client.get(console_url(team, "team_restore", restore.pk)).status_code == 403  # the team's rows
        for change in CHANGES:
            assert client.post(change_url("dashboard", team, restore.pk, change)).status_code == 403
    assert client.post(console_url(team, "team_restore_request"), {"latest": "on"}).status_code == 403
    assert client.post(console_url(team, "team_drill")).status_code == 403
    assert states(previewing, swapped) == [Restore.State.PREVIEW_RUNNING, Restore.State.SWAPPED]
    assert Restore.objects.count() == 2 and not DBTaskResult.objects.exists()
    # The page lists the restores but offers no button.
    text = client.get(console_url(team)).content.decode()
    assert f'id="restore-{previewing.pk}"' in text and "restore-request-form" not in text
    assert f'id="restore-{previewing.pk}-confirm_swap"' not in text


def test_each_restore_offers_what_its_state_allows_and_each_change_is_queued(staff_client, make_team):
    team = make_team("acme")
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
    requested = make_restore(team)
    previewing = make_restore(team, Restore.State.PREVIEW_RUNNING)
    swapped = make_restore(team, Restore.State.SWAPPED, swapped_at=timezone.now())
    kept_no_more = make_restore(team, Restore.State.SWAPPED, swapped_at=timezone.now() - timedelta(days=30),
                                volumes_deleted_at=timezone.now())
    failed = make_restore(team, Restore.State.FAILED, message="litestream restore of data.db failed: boom")
    text = staff_client.get(console_url(team)).content.decode()
    offered = {restore.pk: {change for change in ("confirm_swap", "swap_back", "cancel")
                            if f'id="restore-{restore.pk}-{change}"' in text}
               for restore in (requested, previewing, swapped, kept_no_more, failed)}
    assert offered == {requested.pk: {"cancel"}, previewing.pk: {"confirm_swap", "cancel"},
                       swapped.pk: {"swap_back"}, kept_no_more.pk: set(), failed.pk: set()}
    assert "litestream restore of data.db failed: boom" in text and "test, " in text  # message, who asked

    # A state that refuses the change: a 409 naming why, nothing changed, nothing queued.
    refused = staff_client.post(change_url("dashboard", team, requested.pk, "confirm-swap"))
    assert refused.status_code == 409
    assert "only a running preview can be swapped in" in refused.content.decode()
    refused = staff_client.post(change_url("dashboard", team, kept_no_more.pk, "swap-back"))
    assert refused.status_code == 409 and "was deleted on" in refused.content.decode()
    assert states(requested, kept_no_more) == [Restore.State.REQUESTED, Restore.State.SWAPPED]
    assert not queued(RESTORE_TASK)

    assert staff_client.post(change_url("dashboard", team, previewing.pk, "confirm-swap")).status_code == 302
    assert staff_client.post(change_url("dashboard", team, requested.pk, "cancel")).status_code == 302
    assert states(previewing, requested) == [Restore.State.SWAPPING, Restore.State.CANCELLED]
    assert queued(RESTORE_TASK) == [[previewing.pk, "operator"], [requested.pk, "operator"]]
    # Swapping back waits for no other restore in progress (the swap just confirmed is one).
    busy = staff_client.post(change_url("dashboard", team, swapped.pk, "swap-back"))
    assert busy.status_code == 409 and "is in progress" in busy.content.decode()
    Restore.objects.filter(pk=previewing.pk).update(state=Restore.State.FAILED)
    assert staff_client.post(change_url("dashboard", team, swapped.pk, "swap-back")).status_code == 302
    assert states(swapped) == [Restore.State.SWAPPING_BACK]


def test_unknown_restores_and_another_teams_are_404(staff_client, make_team):
    acme, other = make_team("acme"), make_team("other")
    theirs = make_restore(other, Restore.State.PREVIEW_RUNNING)
    for restore_id in (theirs.pk, theirs.pk + 1000, 2**63 - 1, 2**63, 10**30):
        assert staff_client.get(console_url(acme, "team_restore", restore_id)).status_code == 404, restore_id
        for change in CHANGES:
            assert staff_client.post(change_url("dashboard", acme, restore_id, change)).status_code == 404
    assert staff_client.get("/dashboard/teams/acme/restores/-1/").status_code == 404
    assert staff_client.post(reverse("dashboard:restore_cancel", args=["nobody", theirs.pk])).status_code == 404
    assert states(theirs) == [Restore.State.PREVIEW_RUNNING] and not DBTaskResult.objects.exists()


@pytest.fixture
def fake_preview(monkeypatch):
    """backups.preview.preview_tables answering with what `answer` holds (tables, or an exception to raise)."""
    answer = {}

    def preview_tables(restore):
        answer["asked"] = restore.pk
        if isinstance(answer.get("tables"), Exception):
            raise answer["tables"]
        return answer["tables"]

    monkeypatch.setattr("backups.preview.preview_tables", preview_tables)
    return answer


HOSTILE = "<script>alert(1)</script>"
TABLES = [PreviewTable(name="notes", count=30, columns=["id", "body"],
                       rows=[["1", "note 1"], ["2", HOSTILE]]),
          PreviewTable(name=HOSTILE, count=0, columns=["x"], rows=[])]


@pytest.mark.parametrize("namespace", ["dashboard", "members"])
def test_the_preview_page_shows_tables_counts_and_rows_escaped_and_says_when_there_is_none(
        client, staff_client, make_team, fake_preview, namespace):
    team = make_team("acme")
    if namespace == "members":
        client.force_login(join(team, "ada@example.com", Membership.Role.ADMIN).user)
    pages = staff_client if namespace == "dashboard" else client
    restore = make_restore(team, Restore.State.PREVIEW_RUNNING, preview_url="http://127.0.0.1:9/")
    url = reverse(f"{namespace}:team_restore", args=[team.slug, restore.pk])
    fake_preview["tables"] = TABLES
    page = pages.get(url)
    assert page.status_code == 200 and fake_preview["asked"] == restore.pk
    text = page.content.decode()
    assert "notes" in text and "30 rows, the first 2 shown" in text and "note 1" in text
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert f'id="restore-{restore.pk}-confirm_swap"' in text  # confirmed from what was seen
    # A preview that should answer and does not: said, and a 503, never a 500.
    fake_preview["tables"] = PreviewUnavailable("the preview answered HTTP 502")
    page = pages.get(url)
    assert page.status_code == 503 and "No preview to show: the preview answered HTTP 502." in page.content.decode()
    # One that is no longer running (swapped in): said, a plain page.
    Restore.objects.filter(pk=restore.pk).update(state=Restore.State.SWAPPED, swapped_at=timezone.now())
    fake_preview["tables"] = PreviewUnavailable(f"{restore} has no running preview")
    page = pages.get(url)
    assert page.status_code == 200 and "has no running preview" in page.content.decode()


@pytest.mark.parametrize("group, allowed", [("Fleet operator", True), ("Fleet administrator", True),
                                            ("Fleet viewer", False), ("Fleet deployer", False)])
def test_drill_now_is_queued_for_the_worker_with_run_drill(client, django_user_model, make_team, monkeypatch,
                                                           group, allowed):
    team = make_team("acme")
    ensure_groups()
    staff = django_user_model.objects.create_user("someone", password=PASSWORD, is_staff=True)
    staff.groups.add(Group.objects.get(name=group))
    force_staff_login(client, staff)
    drilled = []
    monkeypatch.setattr("backups.drills.drill_team", lambda team, *, actor, database: drilled.append(
        (team.slug, actor, database)) or RestoreDrill(status=RestoreDrill.Status.SUCCEEDED))
    response = client.post(console_url(team, "team_drill"))
    assert drilled == []  # never in the request
    if not allowed:
        assert response.status_code == 403 and not queued(DRILL_TASK)
        return
    assert response.status_code == 302 and queued(DRILL_TASK) == [[team.pk, "someone", "data.db"]]
    assert client.get(response.url).status_code == 200
    # A second click while the first waits for the worker adds nothing.
    again = client.post(console_url(team, "team_drill"), follow=True)
    assert "already waiting for the worker" in again.content.decode()
    assert queued(DRILL_TASK) == [[team.pk, "someone", "data.db"]]
    # The worker runs it as the staff user who asked.
    from backups.tasks import drill_team_task

    assert drill_team_task.call(team.pk, "someone", "data.db") == RestoreDrill.Status.SUCCEEDED
    assert drilled == [("acme", "someone", "data.db")]
    assert client.get("/dashboard/teams/acme/drill/").status_code == 405


# --- requests on the real replica (SeaweedFS and Litestream) -------------------------------------------------

def test_requesting_a_restore_from_the_console_and_the_members_pages(replicated, staff_client, client):  # noqa: F811
    team, (t1, t2, _) = replicated["team"], replicated["written_at"]
    window = replica_window(team, "data.db", actor="test")
    [t1_point] = [point for point in window.points if t1 < point.time < t2]
    between = replicated["between"].isoformat()
    url = console_url(team, "team_restore_request")

    # No instance to restore into: refused before the replica is read.
    refused = staff_client.post(url, {"timestamp": between})
    assert refused.status_code == 409 and "has no instance to restore into" in refused.content.decode()
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")

    # Bad input: the form's error, a 400, nothing recorded.
    for bad, message in [({}, "Name one point to restore to"), ({"timestamp": "soon"}, "not an ISO 8601 time"),
                         ({"timestamp": "2026-11-26T17:40:00"}, "has no time zone"),
                         ({"txid": "xyz"}, "not a transaction id"), ({"latest": "on", "txid": "3"}, "Name one point"),
                         ({"latest": "on", "database": "../etc.db"}, "A database name"),
                         ({"timestamp": between, "txid": "3"}, "not both")]:
        response = staff_client.post(url, bad)
        assert response.status_code == 400, bad
        assert message in response.content.decode(), bad
    # Outside the window: refused with the nearest valid points.
    outside = staff_client.post(url, {"timestamp": (t1 - timedelta(hours=1)).isoformat()})
    assert outside.status_code == 400
    assert f"Nearest restorable:\n    txid <code>{window.oldest.txid_hex}</code>" in outside.content.decode()
    assert not Restore.objects.exists() and not queued(RESTORE_TASK)

    # Between t1 and t2: pinned to t1's point, asked by the staff user, queued.
    done = staff_client.post(url, {"timestamp": between})
    assert done.status_code == 302 and done.url == console_url(team)
    restore = Restore.objects.get()
    assert (restore.target_txid, restore.target_time, restore.requested_by, restore.state) == (
        t1_point.txid, t1_point.time, "operator", Restore.State.REQUESTED)
    assert queued(RESTORE_TASK) == [[restore.pk, "operator"]]
    assert f"txid <code>{t1_point.txid_hex}</code>" in staff_client.get(console_url(team)).content.decode()
    # One restore in progress at a time.
    busy = staff_client.post(url, {"latest": "on"})
    assert busy.status_code == 409 and f"restore {restore.pk} of {team.slug}" in busy.content.decode()

    # The team's admin, on the members' pages: the window, then the latest point, recorded as member:<username>.
    client.force_login(join(team, "ada@example.com", Membership.Role.ADMIN).user)
    page = client.get(members_url(team))
    assert page.status_code == 200 and window.newest.txid_hex in page.content.decode()
    assert f'id="restore-{restore.pk}-cancel"' in page.content.decode()
    assert client.post(change_url("members", team, restore.pk, "cancel")).status_code == 302
    outside = client.post(members_url(team, "team_restore_request"), {"txid": "ffffffff"})
    assert outside.status_code == 400 and "Nearest restorable" in outside.content.decode()
    assert client.post(members_url(team, "team_restore_request"), {"txid": "zz"}).status_code == 400
    assert client.post(members_url(team, "team_restore_request"), {"latest": "on"}).status_code == 302
    latest = Restore.objects.exclude(pk=restore.pk).get()
    assert (latest.target_txid, latest.requested_by) == (window.newest.txid, "member:ada")
    assert queued(RESTORE_TASK)[-2:] == [[restore.pk, "member:ada"], [latest.pk, "member:ada"]]


# --- the members' side ----------------------------------------------------------------------------------------

def join(team, email, role):
    user = make_member(email)
    return Membership.objects.create(team=team, user=user, role=role)


@pytest.fixture
def two_teams(make_team):
    """Teams A and B, each with an owner, an admin, a member and a viewer, and a restore in each state that offers
    something."""
    teams = {}
    for slug in ("team-a", "team-b"):
        team = make_team(slug)
        Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
        people = {role: join(team, f"{role}-{slug}@example.com", role).user for role in Membership.Role}
        restores = [make_restore(team, Restore.State.PREVIEW_RUNNING, preview_url="http://127.0.0.1:9/"),
                    make_restore(team, Restore.State.SWAPPED, swapped_at=timezone.now())]
        teams[slug] = {"team": team, "people": people, "restores": restores}
    return teams


def restore_requests(team, restore) -> list[tuple[str, str]]:
    """The members' URLs naming `restore` (of `team`, or guessed under it)."""
    return [("get", members_url(team, "team_restore", restore.pk)),
            *(("post", change_url("members", team, restore.pk, change)) for change in CHANGES)]


def member_requests(team, restore) -> list[tuple[str, str]]:
    """Every members' restore URL of `team`, those naming `restore` included."""
    return [("get", members_url(team)), ("post", members_url(team, "team_restore_request")),
            *restore_requests(team, restore)]


def unchanged(two_teams) -> bool:
    return all(states(*side["restores"]) == [Restore.State.PREVIEW_RUNNING, Restore.State.SWAPPED]
               for side in two_teams.values()) and not DBTaskResult.objects.filter(task_path=RESTORE_TASK).exists()


def test_a_user_of_team_a_never_sees_previews_confirms_or_cancels_team_bs_restores(client, two_teams, fake_preview):
    a, b = two_teams["team-a"], two_teams["team-b"]
    fake_preview["tables"] = TABLES
    for role, user in a["people"].items():
        client.force_login(user)
        for restore in b["restores"]:
            # Under B's slug (not a member): 404 whatever the role and the data POSTed; under A's (the id guessed):
            # 404 for A's owners and admins, 403 for those who may not restore A at all.
            for method, url in [*member_requests(b["team"], restore), *restore_requests(a["team"], restore)]:
                status = getattr(client, method)(url, {"latest": "on"}).status_code
                expected = 404 if url.startswith("/teams/team-b/") or role in ("owner", "admin") else 403
                assert status == expected, (role, method, url, status)
        for guessed in (b["restores"][0].pk + 1000, 2**63 - 1, 2**63):
            status = client.get(members_url(a["team"], "team_restore", guessed)).status_code
            assert status == (404 if role in ("owner", "admin") else 403), (role, guessed)
    assert "asked" not in fake_preview  # B's preview was never read
    assert unchanged(two_teams)
    assert Restore.objects.count() == 4


@pytest.mark.parametrize("role", [Membership.Role.MEMBER, Membership.Role.VIEWER])
def test_members_and_viewers_of_the_team_cannot_restore_it(client, two_teams, fake_preview, role):
    a = two_teams["team-a"]
    fake_preview["tables"] = TABLES
    client.force_login(a["people"][role])
    assert 'id="backups-link"' not in client.get(members_url(a["team"], "team")).content.decode()
    for restore in a["restores"]:
        for method, url in member_requests(a["team"], restore):
            response = getattr(client, method)(url, {"latest": "on", "timestamp": "soon"})
            assert response.status_code == 403, (method, url)
            assert "Only owners and admins may restore" in response.content.decode()
    assert "asked" not in fake_preview and unchanged(two_teams)


def test_a_user_outside_every_team_gets_404_and_a_signed_out_one_is_sent_to_sign_in(client, two_teams):
    a = two_teams["team-a"]
    for method, url in member_requests(a["team"], a["restores"][0]):
        response = getattr(client, method)(url, {"latest": "on"})
        assert response.status_code == 302 and "/accounts/login/" in response.url, url
    client.force_login(make_member("stranger@example.com"))
    for method, url in member_requests(a["team"], a["restores"][0]):
        assert getattr(client, method)(url, {"latest": "on"}).status_code == 404, url
    assert unchanged(two_teams)


@pytest.mark.parametrize("role", [Membership.Role.OWNER, Membership.Role.ADMIN])
def test_owners_and_admins_confirm_swap_back_and_cancel_their_teams_restores(client, two_teams, role):
    a = two_teams["team-a"]
    previewing, swapped = a["restores"]
    client.force_login(a["people"][role])
    assert 'id="backups-link"' in client.get(members_url(a["team"], "team")).content.decode()
    refused = client.post(change_url("members", a["team"], previewing.pk, "swap-back"))
    assert refused.status_code == 409 and "only a swapped-in restore can be swapped back" in refused.content.decode()
    refused = client.post(change_url("members", a["team"], swapped.pk, "cancel"))
    assert refused.status_code == 409 and "it cannot be cancelled" in refused.content.decode()
    assert client.post(change_url("members", a["team"], previewing.pk, "cancel")).status_code == 302
    assert client.post(change_url("members", a["team"], swapped.pk, "swap-back")).status_code == 302
    assert states(previewing, swapped) == [Restore.State.CANCELLED, Restore.State.SWAPPING_BACK]
    who = f"member:{a['people'][role].get_username()}"
    assert queued(RESTORE_TASK) == [[previewing.pk, who], [swapped.pk, who]]
    assert states(*two_teams["team-b"]["restores"]) == [Restore.State.PREVIEW_RUNNING, Restore.State.SWAPPED]


# --- a hostile preview's answer -------------------------------------------------------------------------------

@pytest.fixture
def hostile_preview():
    """A preview on 127.0.0.1 that answers the listing with `answer["listing"]` and every table with no rows."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answer = {}

    class Preview(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.count("/") > 1:
                time.sleep(answer.get("table_delay", 0))
            body = json.dumps(answer["listing"] if self.path.count("/") == 1 else {"rows": []}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Preview)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answer["url"] = f"http://127.0.0.1:{server.server_port}/"
    yield answer
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("field, value, problem", [
    ("count", "lots", "count for table &#x27;notes&#x27; is not a number"),
    ("count", [1], "count for table &#x27;notes&#x27; is not a number"),
    ("count", {"n": 1}, "count for table &#x27;notes&#x27; is not a number"),
    ("columns", 5, "columns of table &#x27;notes&#x27; are not a list"),
    ("columns", "id", "columns of table &#x27;notes&#x27; are not a list"),
])
def test_a_preview_answering_a_listing_of_the_wrong_shape_is_unavailable_not_a_500(staff_client, make_team,
                                                                                  hostile_preview, field, value,
                                                                                  problem):
    team = make_team("acme")
    restore = make_restore(team, Restore.State.PREVIEW_RUNNING, preview_url=hostile_preview["url"])
    hostile_preview["listing"] = {"tables": [{"name": "notes", "columns": ["id"], "count": 1, field: value}]}
    page = staff_client.get(console_url(team, "team_restore", restore.pk))
    assert page.status_code == 503
    assert f"No preview to show: the preview&#x27;s {problem}" in page.content.decode()


def test_a_slow_preview_holds_the_page_for_its_budget_only(staff_client, make_team, hostile_preview, monkeypatch):
    monkeypatch.setattr("backups.preview.BUDGET_SECONDS", 0.5)
    team = make_team("acme")
    restore = make_restore(team, Restore.State.PREVIEW_RUNNING, preview_url=hostile_preview["url"])
    hostile_preview["listing"] = {"tables": [{"name": f"t{n}", "columns": ["id"], "count": 1} for n in range(50)]}
    hostile_preview["table_delay"] = 0.2
    page = staff_client.get(console_url(team, "team_restore", restore.pk))
    assert page.status_code == 503
    assert "the preview answered too slowly (over 0.5 s)" in page.content.decode()
