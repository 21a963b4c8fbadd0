"""Deployments from the dashboard: staff only, queued on the task worker, followed team by team."""

import pytest
from django.core.management import call_command
from django_tasks_db.models import DBTaskResult

from deploys.models import Deployment, DeploymentTarget
from deploys.services import start_deployment
from instances.fleet import provision_fleet
from instances.provisioning import instance_for

V2 = "registry.fly.io/cloudctl-team:v2"


@pytest.fixture
def fleet(fly, fake, make_team, transactional_db):
    teams = [make_team(f"team-{n}") for n in range(3)]
    assert provision_fleet(teams, concurrency=3, actor="test").failed == {}
    return teams


def run_worker():
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)


def test_anonymous_and_non_staff_cannot_see_or_start_deployments(client, django_user_model, fleet):
    deployment = start_deployment(V2, actor="test")
    tasks_before = DBTaskResult.objects.count()
    pages = ["/dashboard/deployments/", f"/dashboard/deployments/{deployment.pk}/",
             f"/dashboard/deployments/{deployment.pk}/status.json"]
    posts = ["/dashboard/deployments/", f"/dashboard/deployments/{deployment.pk}/resume/",
             f"/dashboard/teams/{fleet[0].slug}/redeploy/"]
    for who in ("anonymous", "non-staff"):
        if who == "non-staff":
            client.force_login(django_user_model.objects.create_user("someone", password="pw-123456789"))
        for url in pages:
            response = client.get(url)
            assert response.status_code == 302 and "/admin/login/" in response["Location"], (who, url)
        for url in posts:
            response = client.post(url, {"image": "evil:1", "canary": 0, "concurrency": 1, "max_failures": 0})
            assert response.status_code == 302 and "/admin/login/" in response["Location"], (who, url)
    assert Deployment.objects.count() == 1 and DBTaskResult.objects.count() == tasks_before


def test_staff_start_a_deployment_the_worker_runs_it_and_the_page_follows(staff_client, fleet, fake):
    response = staff_client.post("/dashboard/deployments/", {
        "image": V2, "teams": "", "canary": 1, "concurrency": 2, "max_failures": 0, "wave_size": 0})
    deployment = Deployment.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/dashboard/deployments/{deployment.pk}/"
    assert deployment.requested_by == "operator" and deployment.all_teams
    status = staff_client.get(f"/dashboard/deployments/{deployment.pk}/status.json").json()
    assert status["is_open"] and status["progress"]["pending"] == 3

    run_worker()  # the queued task runs the deployment

    status = staff_client.get(f"/dashboard/deployments/{deployment.pk}/status.json").json()
    assert (status["state"], status["is_open"], status["progress"]["updated"]) == ("succeeded", False, 3)
    assert {target["step"] for target in status["targets"]} == {"updated"}
    page = staff_client.get(f"/dashboard/deployments/{deployment.pk}/").content.decode()
    assert all(team.slug in page for team in fleet) and "Succeeded" in page
    assert all(fake.machine(instance_for(team).resources["machine"]).config["image"] == V2 for team in fleet)
    # The deploy shows on each team's timeline.
    assert "deployed" in staff_client.get(f"/dashboard/teams/{fleet[0].slug}/status.json").content.decode()


def test_a_second_deployment_is_refused_with_the_reason(staff_client, fleet):
    start_deployment(V2, actor="test")
    response = staff_client.post("/dashboard/deployments/", {
        "image": V2 + "b", "canary": 1, "concurrency": 2, "max_failures": 0})
    assert response.status_code == 400 and "still open" in response.content.decode()
    assert Deployment.objects.count() == 1


def test_redeploy_one_team_from_its_page(staff_client, fleet, fake):
    response = staff_client.post(f"/dashboard/teams/{fleet[1].slug}/redeploy/", {"image": V2})
    deployment = Deployment.objects.get()
    assert response["Location"] == f"/dashboard/deployments/{deployment.pk}/"
    assert list(deployment.targets.values_list("team__slug", flat=True)) == [fleet[1].slug]
    run_worker()
    assert fake.machine(instance_for(fleet[1]).resources["machine"]).config["image"] == V2
    assert fake.machine(instance_for(fleet[0]).resources["machine"]).config["image"] != V2


def test_resume_is_refused_while_a_live_run_holds_the_deployment(staff_client, fleet):
    from datetime import timedelta

    from django.utils import timezone

    from instances.holders import new_holder

    deployment = start_deployment(V2, actor="test")
    tasks_before = DBTaskResult.objects.count()
    Deployment.objects.filter(pk=deployment.pk).update(claimed_by=new_holder(),
                                                       claimed_until=timezone.now() + timedelta(minutes=2))
    response = staff_client.post(f"/dashboard/deployments/{deployment.pk}/resume/", follow=True)
    assert "is being run by" in response.content.decode() and DBTaskResult.objects.count() == tasks_before
    Deployment.objects.filter(pk=deployment.pk).update(state=Deployment.State.INTERRUPTED, claimed_by="",
                                                       claimed_until=None)
    staff_client.post(f"/dashboard/deployments/{deployment.pk}/resume/")
    run_worker()
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.SUCCEEDED
    assert DeploymentTarget.objects.filter(step=DeploymentTarget.Step.UPDATED).count() == 3


def test_metrics_report_the_deployments_progress(client, settings, fleet):
    settings.METRICS_TOKEN = "metrics-secret"
    deployment = start_deployment(V2, actor="test")
    body = client.get("/private/metrics", HTTP_AUTHORIZATION="Bearer metrics-secret").content.decode()
    assert "cloudctl_deployment_open 1.0" in body
    assert f'cloudctl_deployment_teams{{deployment="{deployment.pk}",image="{V2}",step="pending"}} 3.0' in body
