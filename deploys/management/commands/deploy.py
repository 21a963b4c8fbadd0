import signal
import threading
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError

from deploys.models import Deployment, DeploymentTarget
from deploys.plan import DeploymentRefused, plan_deployment
from deploys.runner import run_deployment
from deploys.selectors import open_deployment
from deploys.services import start_deployment
from teams.models import Team

ACTOR = "manage.py deploy"
# The final table lists every team up to this many; beyond, only the teams that did not simply update.
FULL_TABLE_LIMIT = 50


class Command(BaseCommand):
    help = ("Roll an instance image out to teams: canary teams first, then waves; halts and rolls back when "
            "failures pass --max-failures. Ctrl-C stops starting teams and lets the ones in flight finish; "
            "--resume continues exactly where it stopped.")

    def add_arguments(self, parser):
        parser.add_argument("--image", help="the image (Fly) or instance version (local backend) to roll out")
        parser.add_argument("--teams", help="comma-separated slugs")
        parser.add_argument("--all", action="store_true", help="every active team")
        parser.add_argument("--canary", type=int, default=1, help="teams updated first, alone (default 1)")
        parser.add_argument("--concurrency", type=int,
                            help="teams updated at a time (default 10; with --resume, the deployment's own)")
        parser.add_argument("--max-failures", type=int, default=0,
                            help="failures of the image tolerated before halting and rolling back (default 0; "
                                 "teams unhealthy before their update, or failing on their previous image too, "
                                 "never count)")
        parser.add_argument("--wave-size", type=int, default=0,
                            help="teams per wave after the canary; each wave finishes before the next (default: one wave)")
        parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
        parser.add_argument("--resume", action="store_true", help="continue the open deployment")

    def handle(self, *, image, teams, all, canary, concurrency, max_failures, wave_size, dry_run, resume, **options):
        if resume:
            if image or teams or all:
                raise CommandError("--resume continues the open deployment: give no --image, --teams or --all")
            deployment = open_deployment()
            if deployment is None:
                raise CommandError("no deployment to resume")
            self._run(deployment, concurrency)
            return
        if not image or bool(teams) == bool(all):
            raise CommandError("give --image, and either --teams or --all")
        slugs = [slug.strip() for slug in teams.split(",") if slug.strip()] if teams else None
        try:
            if dry_run:
                self._print_plan(image, slugs, canary, wave_size)
                return
            deployment = start_deployment(image, actor=ACTOR, slugs=slugs, canary=canary,
                                          concurrency=concurrency or 10, max_failures=max_failures,
                                          wave_size=wave_size)
        except DeploymentRefused as refused:
            raise CommandError(str(refused)) from None
        self._run(deployment, None)

    def _print_plan(self, image, slugs, canary, wave_size):
        teams = Team.objects.filter(slug__in=slugs) if slugs is not None else Team.objects.filter(
            status=Team.Status.ACTIVE)
        plan = plan_deployment(image, list(teams.order_by("pk")), canary=canary, wave_size=wave_size)
        self.stdout.write(f"would deploy {plan.image} to {plan.team_count} team(s) in {len(plan.waves)} wave(s):")
        for number, wave in enumerate(plan.waves):
            names = ", ".join(team.slug for team in wave[:8]) + (f", ... ({len(wave)} in all)" if len(wave) > 8 else "")
            self.stdout.write(f"  {'canary' if number == 0 and canary else f'wave {number}'}: {names}")
        for team, reason in plan.skipped:
            self.stdout.write(f"  skip {team.slug}: {reason}")

    def _run(self, deployment: Deployment, concurrency: int | None):
        from tqdm import tqdm

        todo = deployment.targets.exclude(step__in=[DeploymentTarget.Step.SKIPPED, DeploymentTarget.Step.UPDATED])
        self.stdout.write(f"deployment {deployment.pk}: {deployment.image} to {todo.count()} team(s), "
                          f"{concurrency or deployment.concurrency} at a time, halting after "
                          f"{deployment.max_failures} failure(s)")
        stop = threading.Event()
        counts = {"updated": 0, "failed": 0, "tenant fault": 0, "rolled back": 0}
        with self._stopping_on_interrupt(stop), \
                tqdm(total=todo.count(), unit="team", desc="deploying", file=self.stderr) as bar:
            def progress(target):
                step = target.step.replace("_", " ")
                if step in counts:
                    counts[step] += 1
                if target.step in (DeploymentTarget.Step.ROLLED_BACK, DeploymentTarget.Step.ROLLBACK_FAILED):
                    bar.set_description("rolling back")
                else:
                    bar.update()
                bar.set_postfix(counts, refresh=False)

            try:
                deployment = run_deployment(deployment, actor=ACTOR, concurrency=concurrency, progress=progress,
                                            stop=stop)
            except DeploymentRefused as refused:
                raise CommandError(str(refused)) from None
        self._print_table(deployment)
        if deployment.state == Deployment.State.SUCCEEDED:
            return
        returncode = 130 if deployment.is_open else 1
        raise CommandError(f"deployment {deployment.pk} {deployment.get_state_display().lower()}: "
                           f"{deployment.message}", returncode=returncode)

    @contextmanager
    def _stopping_on_interrupt(self, stop: threading.Event):
        """The first Ctrl-C (or SIGTERM) sets `stop`: no new team starts. A second one gives up at once (leases
        left by the updates in flight are recorded, and the next run releases them)."""

        def interrupt(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            self.stderr.write("\nstopping: letting the updates in flight finish (Ctrl-C again to give up now)")

        previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _print_table(self, deployment: Deployment):
        targets = list(deployment.targets.select_related("team").order_by("wave", "team__slug"))
        steps = {}
        for target in targets:
            steps[target.get_step_display()] = steps.get(target.get_step_display(), 0) + 1
        shown = targets if len(targets) <= FULL_TABLE_LIMIT else [
            target for target in targets if target.step != DeploymentTarget.Step.UPDATED]
        if shown:
            width = max(len(target.team.slug) for target in shown)
            self.stdout.write(f"\n{'team':<{width}}  wave  {'step':<15}  {'previous image':<40}  error")
            for target in shown:
                self.stdout.write(f"{target.team.slug:<{width}}  {target.wave:>4}  {target.get_step_display():<15}  "
                                  f"{target.previous_image or '-':<40}  {target.error.splitlines()[0] if target.error else ''}")
        self.stdout.write("\n" + ", ".join(f"{count} {step.lower()}" for step, count in steps.items()))
        self.stdout.write(f"deployment {deployment.pk}: {deployment.get_state_display()} - {deployment.message}")
