from django.core.management.base import BaseCommand, CommandError

from cloudctl.schedule import SCHEDULE, queue_schedule


class Command(BaseCommand):
    help = ("Queue every periodic task that is on (" + ", ".join(
        f"{periodic.task.name}: CLOUDCTL_{periodic.setting}" for periodic in SCHEDULE) + ", in seconds; 0 is "
        "off) for the worker, each once: a task with a run waiting gets no second chain. Safe on every deploy "
        "(fly.toml's release command runs it; so does `manage.py dev`).")

    def handle(self, **options):
        try:
            done = queue_schedule()
        except ValueError as error:
            raise CommandError(str(error)) from None
        for line in done:
            self.stdout.write(line)
