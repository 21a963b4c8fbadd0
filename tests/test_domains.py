"""The teams' wildcard certificate as code (issue 13): `manage.py provision_domain` against the fake Fly API
(in process, on virtual time), the periodic check, and what the fleet home shows and shouts."""

import io
import re
import time

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from domains.models import Certificate
from domains.tasks import check_certificate_status
from teams.permissions import ensure_groups

from .staff import PASSWORD, force_staff_login

pytestmark = pytest.mark.django_db

DOMAIN = "teams.example"
WILDCARD = "*.teams.example"
DAY = 24 * 3600


@pytest.fixture
def clock():
    """Virtual time starting now, so that expiries the fake sets compare with the dashboard's clock."""
    from fakefly import VirtualClock

    return VirtualClock(start=time.time())


@pytest.fixture
def router_app(fly, settings):
    """The router's Fly app with its public IPs (fly.router.toml; `fly ips allocate-*`)."""
    settings.TEAMS_DOMAIN = DOMAIN
    settings.ROUTER_FLY_APP = "cloudctl-router"
    fly.client.create_app("cloudctl-router", "acme", "router-net")
    fly.client.assign_ip("cloudctl-router", "shared_v4")
    fly.client.assign_ip("cloudctl-router", "v6")
    return fly.client


def printed_records(output: str) -> list[tuple[str, str, str]]:
    """The DNS records the command printed, as (name, type, value)."""
    return [tuple(line.split()) for line in output.splitlines() if line.startswith("  ") and len(line.split()) == 3]


def provision(router_app, monkeypatch, *, on_first_wait=None, **options):
    """Runs the command; `on_first_wait(output so far)` runs when it first waits between checks (the operator
    creating the records it printed). Returns (stdout, stderr, exit code)."""
    out, err = io.StringIO(), io.StringIO()
    sleep = router_app.sleep
    waits = []

    def wait(seconds):
        if not waits and on_first_wait:
            on_first_wait(out.getvalue())
        waits.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(router_app, "sleep", wait)
    try:
        call_command("provision_domain", DOMAIN, stdout=out, stderr=err, **options)
        code = 0
    except SystemExit as exit:
        code = exit.code
    return out.getvalue(), err.getvalue(), code


def create_printed_records(fake):
    def create(output):
        for name, record_type, value in printed_records(output):
            fake.dns_set(name, record_type, value)
    return create


def active_certificate(router_app, fake, monkeypatch):
    output, _, code = provision(router_app, monkeypatch, on_first_wait=create_printed_records(fake), interval=5)
    assert code == 0, output
    return Certificate.objects.get(hostname=WILDCARD)


def test_the_command_prints_the_records_then_waits_until_the_certificate_is_active(router_app, fake, monkeypatch):
    output, errors, code = provision(router_app, monkeypatch, on_first_wait=create_printed_records(fake),
                                     interval=5, timeout=120)

    assert code == 0, errors
    requested = router_app.get_certificate("cloudctl-router", WILDCARD)
    expected = [(record.name, record.type, record.value) for record in requested.dns_records]
    assert printed_records(output) == expected
    assert expected[0][:2] == ("_acme-challenge.teams.example", "CNAME")  # the challenge first
    assert {record_type for _, record_type, _ in expected[1:]} == {"A", "AAAA"}
    assert "pending_validation" in output and f"{WILDCARD} is active" in output
    certificate = Certificate.objects.get(hostname=WILDCARD)
    assert certificate.active and certificate.expires_at is not None and certificate.validation_errors == []
    assert (certificate.app, certificate.requested_by) == ("cloudctl-router", "command provision_domain")
    assert not fake.refused


def test_wrong_dns_shows_the_validation_errors_and_exits_non_zero_at_the_timeout(router_app, fake, monkeypatch,
                                                                                    staff_client):
    def create_a_wrong_challenge(output):
        challenge = printed_records(output)[0]
        fake.dns_set(challenge[0], "CNAME", "teams.example.elsewhere.flydns.net")

    output, errors, code = provision(router_app, monkeypatch, on_first_wait=create_a_wrong_challenge,
                                     interval=5, timeout=60)

    assert code == 3
    assert "acme_challenge_mismatch" in output and "still pending_validation after 60 s" in errors
    certificate = Certificate.objects.get(hostname=WILDCARD)
    assert [error["code"] for error in certificate.validation_errors] == ["acme_challenge_mismatch"]
    page = staff_client.get("/dashboard/").content.decode()
    assert 'id="certificate-alerts"' in page and "acme_challenge_mismatch" in page


def test_a_rerun_adopts_the_certificate_fly_already_has(router_app, fake, monkeypatch):
    first, _, code = provision(router_app, monkeypatch, timeout=0)
    assert code == 3 and "requested" in first  # --timeout 0: requested, not waited for

    again, _, _ = provision(router_app, monkeypatch, on_first_wait=create_printed_records(fake), interval=5)

    assert "already there, adopted" in again and printed_records(again) == printed_records(first)
    assert [entry.hostname for entry in router_app.list_certificates("cloudctl-router")] == [WILDCARD]
    assert Certificate.objects.get().active
    final, _, code = provision(router_app, monkeypatch)
    assert code == 0 and "adopted" in final and printed_records(final) == []  # active: nothing to create
    assert not fake.refused


def test_the_periodic_check_records_what_fly_now_says(router_app, fake, monkeypatch, clock):
    provision(router_app, monkeypatch, timeout=0)
    certificate = Certificate.objects.get()
    for name, record_type, value in [(r["name"], r["type"], r["value"]) for r in certificate.dns_records]:
        fake.dns_set(name, record_type, value)
    assert check_certificate_status.call() == 1  # Fly sees the records: issued later
    clock.sleep(fake.latencies.certificate_issue)

    check_certificate_status.call()

    checked = Certificate.objects.get()
    assert checked.active and checked.expires_at and checked.checked_at > certificate.checked_at
    assert checked.checked_by == "task check_certificate_status"


def test_fewer_than_14_days_to_expiry_shouts_on_the_dashboard(router_app, fake, monkeypatch, clock, staff_client):
    active_certificate(router_app, fake, monkeypatch)
    fake.set_certificate_expiry(WILDCARD, clock.now() + 60 * DAY)
    check_certificate_status.call()
    calm = staff_client.get("/dashboard/").content.decode()
    assert 'id="certificate-alerts"' not in calm and "active" in calm

    fake.set_certificate_expiry(WILDCARD, clock.now() + 10 * DAY)
    check_certificate_status.call()

    page = staff_client.get("/dashboard/").content.decode()
    # Ten days on the fake's clock, a few virtual seconds ahead of the dashboard's.
    assert 'id="certificate-alerts"' in page and re.search(r"The certificate expires in (9|10) days", page)


def test_fleet_viewers_see_the_certificate(router_app, fake, monkeypatch, client, django_user_model):
    active_certificate(router_app, fake, monkeypatch)
    ensure_groups()
    viewer = django_user_model.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer.groups.add(Group.objects.get(name="Fleet viewer"))
    force_staff_login(client, viewer)

    page = client.get("/dashboard/").content.decode()

    assert 'id="certificate"' in page and WILDCARD in page and "cloudctl-router" in page


def test_on_fly_a_certificate_not_requested_yet_shouts(router_app, staff_client):
    page = staff_client.get("/dashboard/").content.decode()

    assert 'id="certificate-alerts"' in page and "not been requested yet" in page
    assert "manage.py provision_domain teams.example" in page


def test_on_the_local_backend_certificates_do_not_apply(staff_client, settings):
    settings.TEAMS_DOMAIN, settings.TEAMS_URL_SCHEME, settings.TEAMS_URL_PORT = "localhost", "http", 8080

    page = staff_client.get("/dashboard/").content.decode()

    assert "Certificates do not apply on the local backend" in page and "http://&lt;slug&gt;.localhost:8080/" in page
    assert 'id="certificate-alerts"' not in page
    with pytest.raises(CommandError, match="Fly backend only"):
        call_command("provision_domain", "teams.example", stdout=io.StringIO())
    assert check_certificate_status.call() == 0


@pytest.mark.parametrize("domain", ["localhost", "*.*.example", "no_underscores.example", "x-.example", "", "a..b"])
def test_a_name_that_is_no_domain_is_refused_before_fly_is_asked(router_app, fake, domain):
    with pytest.raises(CommandError, match="is not a domain name"):
        call_command("provision_domain", domain, stdout=io.StringIO())
    assert router_app.list_certificates("cloudctl-router") == []


def test_ctrl_c_leaves_the_certificate_requested_and_its_state_recorded(router_app, monkeypatch):
    def interrupt(output):
        raise KeyboardInterrupt

    output, errors, code = provision(router_app, monkeypatch, on_first_wait=interrupt)

    assert code == 130 and "Interrupted" in errors and "run this command again" in errors
    assert Certificate.objects.get().status == "pending_validation"


def test_the_command_prints_no_secret(router_app, fake, monkeypatch, settings):
    outputs = provision(router_app, monkeypatch, on_first_wait=create_printed_records(fake), interval=5)[:2]
    settings.ROUTER_FLY_APP = "not-created"  # a Fly failure's message too
    with pytest.raises(CommandError) as failure:
        call_command("provision_domain", DOMAIN, stdout=io.StringIO())
    assert "not-created" in str(failure.value)

    for text in (*outputs, str(failure.value)):
        for secret in ("fly-token", settings.ROUTER_KEY, settings.SECRET_KEY, settings.METRICS_TOKEN):
            assert secret not in text


def test_a_certificate_fly_no_longer_has_or_a_failed_check_shouts_and_keeps_what_was_known(
        router_app, fake, monkeypatch, staff_client):
    from flyapi import FlyAPIError

    active_certificate(router_app, fake, monkeypatch)
    known = Certificate.objects.get()

    def fly_is_down(app, hostname):
        raise FlyAPIError(503, None, "service unavailable", "req-1")

    reachable_check = router_app.check_certificate
    monkeypatch.setattr(router_app, "check_certificate", fly_is_down)
    assert check_certificate_status.call() == 0
    failed = Certificate.objects.get()
    assert failed.active and failed.expires_at == known.expires_at and "service unavailable" in failed.check_failure
    page = staff_client.get("/dashboard/").content.decode()
    assert 'id="certificate-alerts"' in page and "The last check could not read Fly" in page

    monkeypatch.setattr(router_app, "check_certificate", reachable_check)
    router_app.delete_certificate("cloudctl-router", WILDCARD)
    check_certificate_status.call()

    assert Certificate.objects.get().status == Certificate.MISSING
    page = staff_client.get("/dashboard/").content.decode()
    assert "no longer has *.teams.example" in page and "could not read Fly" not in page
