"""The members' JSON API for point-in-time restores (issue 16, "from the members' side"): the same services as the
members' restore pages (members.restores, then backups), for programs. A team's owners and admins read the window,
plan (dry run), ask for a restore, see its preview, confirm its swap, swap it back or cancel it; members and viewers
get 403, anyone else 404, the signed-out 401; bad input 400 with the field named, a point outside the window 400
with the nearest valid points, a state that refuses 409. Nothing changes on a refusal."""

from datetime import timedelta

import pytest
from django.test import Client

from backups.models import Restore
from backups.preview import PreviewUnavailable
from backups.replicas import replica_window
from instances.models import Instance
from teams.models import Membership

from .members import make_member
from .test_members_api import api, send
from .test_restore_dry_run import replicated  # noqa: F401  (the fixture: rows at t1, t2, t3 on the local S3)
from .test_restore_pages import (  # noqa: F401  (fixtures: two_teams, fake_preview)
    RESTORE_TASK, TABLES, fake_preview, join, queued, states, two_teams, unchanged,
)

pytestmark = pytest.mark.django_db

CHANGES = ("confirm-swap", "swap-back", "cancel")


def urls(team, restore) -> list[tuple[str, str]]:
    """Every restore endpoint of `team`, those naming `restore` included."""
    base = f"/api/teams/{team.slug}"
    return [("get", f"{base}/backups"), ("post", f"{base}/restores"), ("get", f"{base}/restores/{restore.pk}"),
            *(("post", f"{base}/restores/{restore.pk}/{change}") for change in CHANGES)]


def test_an_admin_reads_the_window_plans_and_asks_for_a_restore(replicated):  # noqa: F811
    team, (t1, t2, _) = replicated["team"], replicated["written_at"]
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
    window = replica_window(team, "data.db", actor="test")
    [t1_point] = [point for point in window.points if t1 < point.time < t2]
    between = replicated["between"].isoformat()
    client = api(join(team, "ada@example.com", Membership.Role.ADMIN).user)
    backups = f"/api/teams/{team.slug}/backups"
    restores = f"/api/teams/{team.slug}/restores"

    read = client.get(backups)
    assert read.status_code == 200 and read["Cache-Control"] == "no-store"
    body = read.json()
    assert body["window"]["oldest"]["txid"] == window.oldest.txid_hex
    assert body["window"]["newest"]["txid"] == window.newest.txid_hex
    assert body["window"]["points"] == len(window.points) and "plan" not in body and body["restores"] == []
    planned = client.get(backups, {"timestamp": between}).json()["plan"]
    assert planned["point"] == {"txid": t1_point.txid_hex, "time": t1_point.time.isoformat()}
    assert planned["database_bytes"] > 0 and planned["download_bytes"] > 0

    # A dry run says what it would restore and records nothing.
    dry = send(client, "post", restores, {"timestamp": between, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["plan"]["point"]["txid"] == t1_point.txid_hex
    # Bad input: 400, the field named; outside the window: 400 with the nearest valid points.
    for bad, message in [({}, "Name one point to restore to"), ({"timestamp": "soon"}, "timestamp: "),
                         ({"txid": "xyz"}, "txid: "), ({"latest": True, "txid": "3"}, "Name one point"),
                         ({"latest": True, "database": "../etc.db"}, "database: A database name"),
                         ({"latest": "yes"}, "Name one point"), ("[1]", "must be a JSON object"),
                         ("{not json", "is not JSON")]:
        response = send(client, "post", restores, bad)
        assert response.status_code == 400 and message in response.json()["error"], (bad, response.json())
    assert client.get(backups, {"txid": "zz"}).status_code == 400
    outside = send(client, "post", restores, {"timestamp": (t1 - timedelta(hours=1)).isoformat()})
    assert outside.status_code == 400
    assert outside.json()["nearest"][0] == {"txid": window.oldest.txid_hex, "time": window.oldest.time.isoformat()}
    assert not Restore.objects.exists() and not queued(RESTORE_TASK)

    # Between t1 and t2: pinned to t1's point, asked by the member, queued; one restore in progress at a time.
    asked = send(client, "post", restores, {"timestamp": between})
    assert asked.status_code == 202, asked.json()
    restore = Restore.objects.get()
    assert asked.json() | {"requested_at": None} == {
        "id": restore.pk, "database": "data.db", "target_txid": t1_point.txid_hex,
        "target_time": t1_point.time.isoformat(), "state": "requested", "message": "", "requested_by": "member:ada",
        "requested_at": None, "swapped_at": None, "swapped_back_at": None, "volumes_deleted_at": None,
        "changes": ["cancel"]}
    assert queued(RESTORE_TASK) == [[restore.pk, "member:ada"]]
    busy = send(client, "post", restores, {"latest": True})
    assert busy.status_code == 409 and f"restore {restore.pk} of {team.slug}" in busy.json()["error"]
    assert [listed["id"] for listed in client.get(backups).json()["restores"]] == [restore.pk]


def test_an_empty_replica_is_a_fact_when_read_and_a_conflict_when_restored(make_team, s3_env):
    team = make_team()
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend")
    client = api(join(team, "ada@example.com", Membership.Role.OWNER).user)
    read = client.get(f"/api/teams/{team.slug}/backups")
    assert read.status_code == 200 and read.json()["window"] is None and read.json()["empty"]
    refused = send(client, "post", f"/api/teams/{team.slug}/restores", {"latest": True})
    assert refused.status_code == 409 and refused.json()["error"] == read.json()["empty"]
    assert not Restore.objects.exists()


@pytest.mark.parametrize("role", [Membership.Role.OWNER, Membership.Role.ADMIN])
def test_owners_and_admins_see_the_preview_and_confirm_swap_back_and_cancel(two_teams, fake_preview, role):
    a = two_teams["team-a"]
    previewing, swapped = a["restores"]
    fake_preview["tables"] = TABLES
    client = api(a["people"][role])
    base = f"/api/teams/{a['team'].slug}/restores"
    shown = client.get(f"{base}/{previewing.pk}").json()
    assert shown["changes"] == ["confirm_swap", "cancel"] and shown["preview"][0] == {
        "table": "notes", "count": 30, "columns": ["id", "body"], "rows": TABLES[0].rows}
    fake_preview["tables"] = PreviewUnavailable("restore 2 has no running preview")
    unavailable = client.get(f"{base}/{swapped.pk}").json()
    assert "preview" not in unavailable and unavailable["preview_unavailable"] == "restore 2 has no running preview"
    refused = send(client, "post", f"{base}/{previewing.pk}/swap-back")
    assert refused.status_code == 409 and "only a swapped-in restore can be swapped back" in refused.json()["error"]
    assert send(client, "post", f"{base}/{swapped.pk}/cancel").status_code == 409
    assert send(client, "get", f"{base}/{swapped.pk}/cancel").status_code == 405
    cancelled = send(client, "post", f"{base}/{previewing.pk}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["state"] == Restore.State.CANCELLED
    assert send(client, "post", f"{base}/{swapped.pk}/swap-back").json()["state"] == Restore.State.SWAPPING_BACK
    assert states(previewing, swapped) == [Restore.State.CANCELLED, Restore.State.SWAPPING_BACK]
    who = f"member:{a['people'][role].get_username()}"
    assert queued(RESTORE_TASK) == [[previewing.pk, who], [swapped.pk, who]]
    assert states(*two_teams["team-b"]["restores"]) == [Restore.State.PREVIEW_RUNNING, Restore.State.SWAPPED]


def test_nobody_else_reads_or_changes_a_teams_restores(two_teams, fake_preview):
    a, b = two_teams["team-a"], two_teams["team-b"]
    fake_preview["tables"] = TABLES
    for role, user in a["people"].items():
        client = api(user)
        may_restore_a = role in (Membership.Role.OWNER, Membership.Role.ADMIN)
        for restore in b["restores"]:
            # Under B's slug: 404 whatever the role; B's restore id under A's slug: 404 for who may restore A (none
            # of A's), 403 for A's members and viewers (they may not restore A at all).
            for method, url in [*urls(b["team"], restore), *urls(a["team"], restore)[2:]]:
                status = send(client, method, url, {"latest": True}).status_code
                expected = 404 if url.startswith("/api/teams/team-b/") or may_restore_a else 403
                assert status == expected, (role, method, url, status)
        if not may_restore_a:
            for method, url in urls(a["team"], a["restores"][0]):
                response = send(client, method, url, {"latest": True})
                assert response.status_code == 403 and "Only owners and admins" in response.json()["error"], url
    stranger, signed_out = api(make_member("stranger@example.com")), Client()
    for method, url in urls(a["team"], a["restores"][0]):
        assert send(stranger, method, url, {"latest": True}).status_code == 404, url
        assert send(signed_out, method, url, {"latest": True}).status_code == 401, url
    # A session without the CSRF token changes nothing either.
    owner = api(a["people"][Membership.Role.OWNER], csrf=True)
    assert send(owner, "post", f"/api/teams/team-a/restores/{a['restores'][0].pk}/cancel").status_code == 403
    assert "asked" not in fake_preview  # no preview was read
    assert unchanged(two_teams)
