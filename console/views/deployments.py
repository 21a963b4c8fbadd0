"""Deployment pages: start one, follow it team by team, resume an interrupted one, redeploy one team.

Deployments run on the task worker (`run_deployment_task`); the pages poll `deployment_status` (JSON).
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_POST

from deploys.models import Deployment, DeploymentTarget
from deploys.plan import DeploymentRefused, ImageRefused
from deploys.selectors import allowed_image_prefixes, deployment_progress, fleet_image
from deploys.services import queue_deployment, queue_resume
from teams.permissions import DEPLOY_IMAGE

from ..forms import DeploymentForm, RedeployForm
from .pages import dashboard_view, render_page, team_or_404

TARGETS_PER_PAGE = 100
RECENT_DEPLOYMENTS = 20


@dashboard_view()
def deployments(request):
    if request.method == "POST" and not request.user.has_perm(DEPLOY_IMAGE):  # whatever the form holds
        raise PermissionDenied
    form = DeploymentForm(request.POST or None, initial={"image": fleet_image()})
    if request.method == "POST" and form.is_valid():
        try:
            deployment = queue_deployment(form.cleaned_data["image"], **form.options(), actor=request.user)
        except DeploymentRefused as refused:
            form.add_error("image" if isinstance(refused, ImageRefused) else None, str(refused))
        else:
            messages.success(request, f"Deployment {deployment.pk} of {deployment.image} queued.")
            return redirect("dashboard:deployment", pk=deployment.pk)
    return render_page(request, "dashboard/deployments.html", {
        "title": "Deployments", "form": form, "fleet_image": fleet_image(),
        "allowed_prefixes": allowed_image_prefixes(), "deployments": Deployment.objects.all()[:RECENT_DEPLOYMENTS],
    }, status=400 if form.errors else 200)


@dashboard_view()
@require_GET
def deployment_detail(request, pk):
    deployment = get_object_or_404(Deployment, pk=pk)
    page = _targets_page(deployment, request.GET.get("page"))
    return render_page(request, "dashboard/deployment_detail.html", {
        "title": f"Deployment {deployment.pk}: {deployment.image}", "deployment": deployment, "page": page,
        "progress": [(step, DeploymentTarget.Step(step).label, count)
                     for step, count in deployment_progress(deployment).items()],
    })


@dashboard_view(json=True)
@require_GET
def deployment_status(request, pk):
    deployment = Deployment.objects.filter(pk=pk).first()
    if deployment is None:
        return JsonResponse({"error": "no such deployment"}, status=404)
    page = _targets_page(deployment, request.GET.get("page"))
    return JsonResponse({
        "id": deployment.pk, "state": deployment.state, "state_display": deployment.get_state_display(),
        "is_open": bool(deployment.is_open), "message": deployment.message,
        "progress": deployment_progress(deployment),
        "targets": [{"team": target.team.slug, "wave": target.wave, "step": target.step,
                     "step_display": target.get_step_display(), "previous_image": target.previous_image,
                     "error": target.error} for target in page],
    }, headers={"Cache-Control": "no-store"})


@dashboard_view(DEPLOY_IMAGE)
@require_POST
def deployment_resume(request, pk):
    deployment = get_object_or_404(Deployment, pk=pk)
    try:
        queue_resume(deployment, actor=request.user)
    except DeploymentRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.info(request, f"Deployment {deployment.pk} will resume where it stopped.")
    return redirect("dashboard:deployment", pk=deployment.pk)


@dashboard_view(DEPLOY_IMAGE)
@require_POST
def team_redeploy(request, slug):
    team = team_or_404(slug)
    form = RedeployForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the image to deploy.")
        return redirect("dashboard:team", slug=team.slug)
    try:
        deployment = queue_deployment(form.cleaned_data["image"], slugs=[team.slug], canary=0, concurrency=1,
                                      actor=request.user)
    except DeploymentRefused as refused:
        messages.error(request, str(refused))
        return redirect("dashboard:team", slug=team.slug)
    messages.info(request, f"Deployment {deployment.pk} of {deployment.image} to {team.slug} queued.")
    return redirect("dashboard:deployment", pk=deployment.pk)


def _targets_page(deployment: Deployment, number):
    targets = deployment.targets.select_related("team").order_by("wave", "team__slug")
    return Paginator(targets, TARGETS_PER_PAGE).get_page(number)
