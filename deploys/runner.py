"""Fleet deploys: one image to many teams, canary teams first, then waves; halt and roll back on failures.

A deployment is persisted team by team. A target's step is saved before its update starts ("updating", with the
image the backend reported) and after it ends, so a run killed at any point is finished by `resume` without
updating any team twice: the backends' `update` changes nothing on an instance that already runs the image.

Only the image's failures count. A team unhealthy before its update (crashed, failing its health check) is
skipped with the reason. A team whose update fails is put back on its previous image at once: healthy there, the
image failed it (`failed`, counted); failing there too, the tenant broke its own instance (`tenant_fault`,
reported, never counted), so no hostile team can halt a rollout. The canary is topped up with other running teams
until `canary` of them took the image.

Halting is continuous: once failures pass `max_failures` no further team is started, the updates in flight
finish, and every team the deployment touched is put back on its own previous image, verified: read back from
the backend, and a team that ran before runs again and answers its health check.
Waves are barriers on top of that: the canary wave must finish cleanly before anything else is touched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from instances.backends import BackendError, BackendUnavailable, MachineBackend
from instances.machines import get_backend
from instances.holders import claim_row, release_row
from instances.models import Instance
from teams import timeline

from .models import Deployment, DeploymentTarget
from .plan import DEPLOYABLE_STATES, UNHEALTHY_BEFORE, DeploymentRefused


logger = logging.getLogger(__name__)

Step = DeploymentTarget.Step
Event = timeline.Kind
CLAIM = timedelta(minutes=2)
# Transient platform errors (408, 429, 5xx, a lease another operation holds) are retried this many times, with
# these pauses, before the team counts as failed.
RETRY_DELAYS = (1, 2, 4, 8, 16, 30)


def run_deployment(deployment: Deployment, *, actor: str, concurrency: int | None = None,
                   progress: Callable[[DeploymentTarget], None] | None = None,
                   stop: threading.Event | None = None, sleep: Callable[[float], None] = time.sleep) -> Deployment:
    """Run (or resume) a deployment to its end; each team's timeline names `actor` (the process running it).
    Setting `stop` interrupts it: no team is started after that, the updates in flight finish, and the deployment
    is left INTERRUPTED for a later run to resume."""
    runner = _Runner(deployment, actor, concurrency or deployment.concurrency, progress, stop or threading.Event(),
                     sleep)
    return runner.run()


class _Attempt(NamedTuple):
    """How a backend operation ended, after its retries."""

    value: Any = None
    error: str = ""  # empty when it worked
    definite: bool = False  # the backend said the instance failed (not the platform unavailable, not our bug)


@dataclass
class _Runner:
    deployment: Deployment
    actor: str
    concurrency: int
    progress: Callable[[DeploymentTarget], None] | None
    stop: threading.Event
    sleep: Callable[[float], None]
    _failures: int = 0  # kept in memory: every worker asks before taking a team
    _write_lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> Deployment:
        deployment = self.deployment
        owner = self._claim()
        self._failures = self._targets_count(step=Step.FAILED)
        try:
            if deployment.state != Deployment.State.ROLLING_BACK:
                self._save(state=Deployment.State.RUNNING)
                for wave in self._waves_left():
                    targets = self._longest_first(wave)
                    while targets:
                        self._run_each(targets, self._update, halt_on_failures=True)
                        if self.stop.is_set() or self._halting():
                            break
                        targets = self._canary_replacements() if wave == 0 else []
                    if self.stop.is_set() or self._halting():
                        break
            if self.stop.is_set():
                self._save(state=Deployment.State.INTERRUPTED, message="interrupted: resume with `deploy --resume`")
                return deployment
            if deployment.state == Deployment.State.ROLLING_BACK or self._halting():
                self._roll_back()
                if self.stop.is_set():
                    self._save(state=Deployment.State.ROLLING_BACK,
                               message="interrupted while rolling back: resume with `deploy --resume`")
                    return deployment
            self._finish()
            return deployment
        finally:
            release_row(Deployment.objects.filter(pk=deployment.pk), owner)

    # --- one team -----------------------------------------------------------------------------------------

    def _update(self, target: DeploymentTarget) -> None:
        image = self.deployment.image
        instance = Instance.objects.select_related("team").get(team_id=target.team_id)
        if instance.state not in DEPLOYABLE_STATES:  # destroyed or failed since the plan was made
            with self._writing():
                self._save_target(target, step=Step.SKIPPED, finished_at=timezone.now(),
                                  error=f"instance is {instance.get_state_display().lower()} now")
            return
        backend = get_backend(instance.backend)
        started = time.monotonic()
        if target.step == Step.PENDING and self._skipped_as_unhealthy(target, instance, backend):
            return

        def record_previous(previous: str) -> None:
            # Saved before anything changes: after a crash, resume knows what to roll back to.
            if target.step == Step.PENDING:
                with self._writing():
                    self._save_target(target, previous_image=previous, step=Step.UPDATING, started_at=timezone.now())

        updated = self._with_retries(target, lambda: backend.update(instance, image, before_change=record_previous))
        previous = target.previous_image
        detail = f"{previous or '?'} -> {image} (deployment {self.deployment.pk})"
        if not updated.error:
            self._conclude(target, instance, step=Step.UPDATED, event=Event.DEPLOYED, detail=detail, image=image,
                           resources=updated.value)
        elif not (updated.definite and previous and previous != image):
            self._conclude(target, instance, step=Step.FAILED, event=Event.DEPLOY_FAILED, detail=detail,
                           error=updated.error)
        else:
            # Whose failure is it? Back on the image it ran well before, a team that fails again broke itself.
            back = self._with_retries(target, lambda: self._put_back(backend, instance, target))
            if back.error and back.definite:
                self._conclude(target, instance, step=Step.TENANT_FAULT, event=Event.DEPLOY_TENANT_FAULT,
                               detail=f"{detail}, then back to {previous}",
                               error=f"{updated.error}\nand on its previous image {previous}: {back.error}")
            elif back.error:
                self._conclude(target, instance, step=Step.FAILED, event=Event.DEPLOY_FAILED, detail=detail,
                               error=f"{updated.error}\nputting it back on {previous} failed too: {back.error}")
            else:
                self._conclude(target, instance, step=Step.FAILED, event=Event.DEPLOY_FAILED,
                               detail=f"{detail}, put back on {previous}", error=updated.error,
                               image=previous, resources=back.value)
        logger.info("deploy deployment=%s team=%s step=%s image=%s previous=%s attempts=%s seconds=%.1f%s",
                    self.deployment.pk, instance.team.slug, target.step, image, target.previous_image,
                    target.attempts, time.monotonic() - started, f" error={target.error!r}" if updated.error else "")

    def _skipped_as_unhealthy(self, target: DeploymentTarget, instance: Instance, backend: MachineBackend) -> bool:
        """Skip a team already failing before its update (with the reason): its failure afterwards would prove
        nothing about the image, and must not count against it."""
        checked = self._with_retries(target, lambda: backend.health_problem(instance))
        if not checked.error and checked.value is None:
            return False
        detail = f"{self.deployment.image} not deployed (deployment {self.deployment.pk})"
        if checked.error:  # nothing is known of the team's health: not deploying to it is a failure, as before
            self._conclude(target, instance, step=Step.FAILED, event=Event.DEPLOY_FAILED, detail=detail,
                           error=f"its health could not be read: {checked.error}")
        else:
            self._conclude(target, instance, step=Step.SKIPPED, event=Event.DEPLOY_SKIPPED, detail=detail,
                           error=f"{UNHEALTHY_BEFORE}: {checked.value}")
        logger.info("deploy deployment=%s team=%s step=%s attempts=%s error=%r", self.deployment.pk,
                    instance.team.slug, target.step, target.attempts, target.error)
        return True

    def _put_back(self, backend: MachineBackend, instance: Instance, target: DeploymentTarget) -> dict:
        """Put the team back on its previous image and verify it from the backend: the image read back is the
        previous one, and a team that ran before the deployment runs again (the backend's update waited for its
        health check). Returns the resources to save."""
        previous = target.previous_image
        resources = backend.update(instance, previous)
        running = backend.running_image(instance)
        if running is None and target.was_running:  # e.g. a local process that exited cleanly is not restarted
            resources = {**resources, **backend.start(instance)}
            running = backend.running_image(instance)
        if running != previous and (running is not None or target.was_running):
            raise BackendError(f"read back {running or 'nothing running'} instead of {previous}")
        return resources

    def _roll_back_one(self, target: DeploymentTarget) -> None:
        instance = Instance.objects.select_related("team").get(team_id=target.team_id)
        backend = get_backend(instance.backend)
        with self._writing():
            self._save_target(target, step=Step.ROLLING_BACK)
        back = self._with_retries(target, lambda: self._put_back(backend, instance, target))
        detail = f"back to {target.previous_image} (deployment {self.deployment.pk} halted)"
        if back.error:
            self._conclude(target, instance, step=Step.ROLLBACK_FAILED, event=Event.ROLLBACK_FAILED, detail=detail,
                           error=back.error)
        else:
            self._conclude(target, instance, step=Step.ROLLED_BACK, event=Event.ROLLED_BACK, detail=detail,
                           image=target.previous_image, resources=back.value)
        logger.info("deploy deployment=%s team=%s step=%s image=%s%s", self.deployment.pk, instance.team.slug,
                    target.step, target.previous_image, f" error={back.error!r}" if back.error else "")

    def _conclude(self, target: DeploymentTarget, instance: Instance, *, step: str, event: Event,
                  detail: str, error: str = "", image: str | None = None, resources: dict | None = None) -> None:
        """Record how one team's change ended: its step (with `error`, else keeping the one it has), its instance
        when it now has `image`, and an event on its timeline."""
        with self._writing():
            if image is not None:
                resources = resources or {}
                instance.image = image
                instance.resources = {**instance.resources, **resources}
                instance.url = resources.get("url", instance.url)
                instance.save(update_fields=["image", "resources", "url", "updated_at"])
            self._save_target(target, step=step, finished_at=timezone.now(), **({"error": error} if error else {}))
            timeline.record(instance.team, event, f"{detail}: {error}" if error else detail, actor=self.actor,
                            data={"deployment": self.deployment.pk, "image": self.deployment.image,
                                  "previous_image": target.previous_image, "step": step},
                            is_error=bool(error) and step != Step.SKIPPED)

    @contextmanager
    def _writing(self):
        """One transaction at a time from this run's workers. SQLite's busy handler sleeps up to 100 ms between
        tries, so fifty threads contending for its write lock spend most of their time asleep; queueing on a
        lock here hands the database over at once (on PostgreSQL it costs next to nothing)."""
        with self._write_lock, transaction.atomic():
            yield

    def _with_retries(self, target: DeploymentTarget, operation: Callable[[], Any]) -> "_Attempt":
        """Run `operation`, retrying transient platform errors."""
        for delay in (*RETRY_DELAYS, None):
            target.attempts += 1
            try:
                return _Attempt(operation())
            except BackendUnavailable as error:
                if delay is None or self.stop.is_set():
                    return _Attempt(error=f"platform unavailable after {target.attempts} attempts: {error}")
                logger.info("deploy deployment=%s team=%s retrying in %ss: %s", self.deployment.pk,
                            target.team_id, delay, error)
                self.sleep(delay)
            except BackendError as error:
                return _Attempt(error=str(error), definite=True)
            except Exception as error:  # a bug must fail one team, visibly, not the whole rollout
                logger.exception("deploy deployment=%s team=%s", self.deployment.pk, target.team_id)
                return _Attempt(error=f"{type(error).__name__}: {error}")
        raise AssertionError("unreachable")

    # --- many teams ---------------------------------------------------------------------------------------

    def _run_each(self, targets: list[DeploymentTarget], work: Callable[[DeploymentTarget], None], *,
                  halt_on_failures: bool = False) -> None:
        """`work` on each target, `concurrency` at a time, until done, stopped or (with `halt_on_failures`)
        halted; the work in flight always finishes. Each worker takes its next team as soon as it is free."""
        queue = iter(targets)
        lock = threading.Lock()

        def next_target() -> DeploymentTarget | None:
            with lock:
                if self.stop.is_set() or (halt_on_failures and self._halting()):
                    return None
                return next(queue, None)

        def worker() -> None:
            close_old_connections()
            try:
                while (target := next_target()) is not None:
                    work(target)
                    with lock:
                        self._failures += target.step == Step.FAILED
                        if self.progress:
                            self.progress(target)
            finally:
                connection.close()

        workers = [threading.Thread(target=worker, name=f"deploy-{number}", daemon=True)
                   for number in range(min(self.concurrency, len(targets)))]
        for thread in workers:
            thread.start()
        claimed_at = time.monotonic()
        for thread in workers:
            while thread.is_alive():
                thread.join(timeout=1)
                if time.monotonic() - claimed_at > CLAIM.total_seconds() / 4:
                    self._extend_claim()
                    claimed_at = time.monotonic()

    def _canary_replacements(self) -> list[DeploymentTarget]:
        """Running teams of later waves moved into the canary, one for each of the `canary` teams still missing
        that took the image while running (a canary team skipped as unhealthy or failing on its own previous
        image proved nothing): the rest of the fleet waits for them. None once enough did, or none is left."""
        missing = self.deployment.canary - self._targets_count(wave=0, step=Step.UPDATED, was_running=True)
        if missing <= 0:
            return []
        replacements = list(self.deployment.targets.filter(wave__gt=0, step=Step.PENDING, was_running=True)
                            .order_by("wave", "id").values_list("pk", flat=True)[:missing])
        self.deployment.targets.filter(pk__in=replacements).update(wave=0)
        return self._targets(pk__in=replacements)

    def _halting(self) -> bool:
        """Failures passed the threshold."""
        return self._failures > self.deployment.max_failures

    def _roll_back(self) -> None:
        self._save(state=Deployment.State.ROLLING_BACK,
                   message=f"halted: {self._targets_count(step=Step.FAILED)} failures "
                           f"(at most {self.deployment.max_failures} allowed); rolling back")
        logger.warning("deploy deployment=%s halted: rolling back every team it changed", self.deployment.pk)
        changed = self._targets(step__in=[Step.UPDATING, Step.UPDATED, Step.FAILED, Step.ROLLING_BACK,
                                          Step.ROLLBACK_FAILED])
        self._run_each([target for target in changed if target.previous_image], self._roll_back_one)

    def _finish(self) -> None:
        counts = {step: self._targets_count(step=step) for step in Step}
        # Not failures of the image: reported, never a reason to halt.
        faults = (f", {counts[Step.TENANT_FAULT]} tenant faults (failing on their previous image too)"
                  if counts[Step.TENANT_FAULT] else "")
        if self.deployment.state == Deployment.State.ROLLING_BACK:
            state = Deployment.State.HALTED
            message = (f"{self.deployment.message.removesuffix('; rolling back')}: {counts[Step.ROLLED_BACK]} "
                       f"rolled back, {counts[Step.ROLLBACK_FAILED]} rollback failures, "
                       f"{counts[Step.PENDING]} never touched{faults}")
        elif counts[Step.FAILED]:
            state = Deployment.State.COMPLETED_WITH_FAILURES
            message = (f"{counts[Step.UPDATED]} updated, {counts[Step.FAILED]} failed{faults}, "
                       f"{counts[Step.SKIPPED]} skipped")
        else:
            state = Deployment.State.SUCCEEDED
            message = f"{counts[Step.UPDATED]} updated{faults}, {counts[Step.SKIPPED]} skipped"
        self._save(state=state, message=message, is_open=None, finished_at=timezone.now())
        logger.info("deploy deployment=%s state=%s %s", self.deployment.pk, state, message)

    # --- persistence --------------------------------------------------------------------------------------

    def _claim(self) -> str:
        owner, holder = claim_row(Deployment.objects.filter(pk=self.deployment.pk, is_open=True), CLAIM)
        self.deployment.refresh_from_db()
        if owner is None:
            if not self.deployment.is_open:
                raise DeploymentRefused(f"{self.deployment} is finished")
            raise DeploymentRefused(f"{self.deployment} is being run by {holder}")
        return owner

    def _extend_claim(self) -> None:
        Deployment.objects.filter(pk=self.deployment.pk).update(claimed_until=timezone.now() + CLAIM)

    def _save(self, **fields) -> None:
        for name, value in fields.items():
            setattr(self.deployment, name, value)
        self.deployment.save(update_fields=list(fields))

    @staticmethod
    def _save_target(target: DeploymentTarget, **fields) -> None:
        for name, value in fields.items():
            setattr(target, name, value)
        target.save(update_fields=[*fields, "attempts"])

    def _targets(self, **filters) -> list[DeploymentTarget]:
        return list(self.deployment.targets.filter(**filters).select_related("team").order_by("wave", "id"))

    def _longest_first(self, wave: int) -> list[DeploymentTarget]:
        """The wave's teams left to update, those whose update restarts them first: started last, their seconds
        of waiting would leave the other slots idle at the end (longest-processing-time-first scheduling)."""
        return list(self.deployment.targets.filter(wave=wave, step__in=[Step.PENDING, Step.UPDATING])
                    .select_related("team").order_by(F("was_running").desc(nulls_last=True), "id"))

    def _targets_count(self, **filters) -> int:
        return self.deployment.targets.filter(**filters).count()

    def _waves_left(self) -> list[int]:
        return sorted(set(self.deployment.targets.filter(step__in=[Step.PENDING, Step.UPDATING])
                          .values_list("wave", flat=True)))
