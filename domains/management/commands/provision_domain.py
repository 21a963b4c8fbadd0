"""`manage.py provision_domain <domain>`: the wildcard certificate for the teams' domain, as code."""

from django.core.management.base import BaseCommand, CommandError

from domains.models import Certificate
from domains.services import (
    CertificateCheckFailed, CertificatesDoNotApply, request_certificate, wait_until_active, wildcard_hostname,
)

# Exit codes (README "Commands"): 0 active; 1 refused or Fly unreachable (CommandError); these two:
TIMED_OUT = 3
INTERRUPTED = 130  # as a shell reports Ctrl-C


class Command(BaseCommand):
    help = ("Request the wildcard certificate *.<domain> on the router's Fly app (adopting one it already has), "
            "print the DNS records to create, then check until it is active. Exits 0 once active, "
            f"{TIMED_OUT} if it is not within --timeout, {INTERRUPTED} on Ctrl-C (the certificate stays requested: "
            "run it again or let the periodic check follow it).")

    def add_arguments(self, parser):
        parser.add_argument("domain", help="the teams' domain, CLOUDCTL_TEAMS_DOMAIN (e.g. teams.example.com)")
        parser.add_argument("--timeout", type=float, default=600.0,
                            help="seconds to wait for the certificate to be active (0: request and print only)")
        parser.add_argument("--interval", type=float, default=10.0, help="seconds between checks")

    def handle(self, *args, domain, timeout, interval, **options):
        if timeout < 0 or interval <= 0:
            raise CommandError("--timeout must be 0 or more and --interval more than 0")
        try:
            hostname = wildcard_hostname(domain)
        except ValueError as error:
            raise CommandError(str(error)) from None
        try:
            return self._provision(domain, hostname, timeout, interval)
        except (CertificatesDoNotApply, CertificateCheckFailed) as error:
            raise CommandError(str(error)) from None
        except KeyboardInterrupt:
            self.stderr.write(f"Interrupted. {hostname} stays requested and its last state is recorded: run this "
                              "command again to go on waiting, or let the periodic check follow it.")
            raise SystemExit(INTERRUPTED) from None

    def _provision(self, domain: str, hostname: str, timeout: float, interval: float) -> None:
        actor = "command provision_domain"
        certificate, adopted = request_certificate(domain, actor=actor)
        self.stdout.write(f"{hostname} on the Fly app {certificate.app}: "
                          f"{'already there, adopted' if adopted else 'requested'} ({certificate.status}).")
        if not certificate.active:
            self._print_records(certificate)
        if timeout == 0 and not certificate.active:
            self.stdout.write("Not waiting (--timeout 0): run this command again to follow it.")
            raise SystemExit(TIMED_OUT)
        progress = {"state": None, "dots": False}  # the state last printed; a check seeing it again prints a dot

        def end_dots() -> None:
            if progress["dots"]:
                self.stdout.write("")
                progress["dots"] = False

        def report(checked: Certificate) -> None:
            state = (checked.status, [error["code"] for error in checked.validation_errors])
            if progress["state"] == state:
                self.stdout.write(".", ending="")
                self.stdout.flush()
                progress["dots"] = True
                return
            end_dots()
            progress["state"] = state
            self.stdout.write(f"{checked.checked_at:%H:%M:%S} {checked.status}")
            for error in checked.validation_errors:
                remediation = f"; {error['remediation']}" if error.get("remediation") else ""
                self.stdout.write(f"  validation error {error['code']}: {error['message']}{remediation}")

        final = wait_until_active(hostname, actor=actor, timeout=timeout, interval=interval, on_check=report)
        end_dots()
        if final.active:
            expiry = f", expires {final.expires_at:%Y-%m-%d}" if final.expires_at else ""
            self.stdout.write(self.style.SUCCESS(f"{hostname} is active{expiry}."))
            return
        self.stderr.write(f"{hostname} is still {final.status} after {timeout:g} s"
                          + (" with validation errors (above)" if final.validation_errors else "")
                          + ": check the DNS records, then run this command again.")
        raise SystemExit(TIMED_OUT)

    def _print_records(self, certificate: Certificate) -> None:
        self.stdout.write("Create these DNS records at your DNS provider (the first proves the wildcard to "
                          "Let's Encrypt; the others send the names to the router):")
        for record in certificate.dns_records:
            self.stdout.write(f"  {record['name']}  {record['type']}  {record['value']}")
