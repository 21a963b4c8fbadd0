"""Certificates and IP assignments: the fake's model of them (raw HTTP) and FlyClient's calls (in-process)."""

from __future__ import annotations

import random

import httpx
import pytest

from fakefly import FakeFly
from flyapi import DNSRecord, FlyAPIError, FlyClient

WILDCARD = "*.teams.example"


@pytest.fixture
def client(clock, fake):
    with FlyClient(token="t", transport=fake.transport(), clock=clock.now, sleep=clock.sleep,
                   rng=random.Random(0)) as client:
        client.create_app("router", "acme", "router-net")
        yield client


def test_an_app_made_by_the_api_has_no_ips_until_one_is_assigned(fake, client):
    assert client.list_ip_assignments("router") == []

    shared = client.assign_ip("router", "shared_v4")
    v6 = client.assign_ip("router", "v6")
    flycast = client.assign_ip("router", "private_v6", network="router-net")

    assert shared.shared and not v6.shared and flycast.private and not v6.private
    assert [ip.ip for ip in client.list_ip_assignments("router")] == [shared.ip, v6.ip, flycast.ip]
    client.release_ip("router", v6.ip)
    assert [ip.ip for ip in client.list_ip_assignments("router")] == [shared.ip, flycast.ip]
    with pytest.raises(FlyAPIError) as raised:
        client.release_ip("router", v6.ip)
    assert raised.value.http_status == 404
    with pytest.raises(ValueError):
        client.assign_ip("router", "v5")
    assert not fake.refused


def test_a_wildcard_certificate_waits_for_its_acme_challenge_then_is_issued(clock, fake, client):
    client.assign_ip("router", "shared_v4")
    v6 = client.assign_ip("router", "v6")

    requested = client.request_certificate("router", WILDCARD)

    assert (requested.hostname, requested.status, requested.configured) == (WILDCARD, "pending_validation", False)
    challenge = requested.dns_records[0]
    assert challenge.type == "CNAME" and challenge.name == "_acme-challenge.teams.example"
    assert challenge.value.startswith("teams.example.") and challenge.value.endswith(".flydns.net")
    assert DNSRecord("AAAA", WILDCARD, v6.ip) in requested.dns_records
    assert requested.expires_at is None and not requested.validation_errors

    # The name's own records alone do not validate a wildcard: DNS-01 only.
    fake.dns_set(WILDCARD, "CNAME", "router.fly.dev")
    clock.sleep(fake.latencies.certificate_issue * 2)
    assert client.check_certificate("router", WILDCARD).status == "pending_validation"

    fake.dns_set(challenge.name, "CNAME", "teams.example.elsewhere.flydns.net")
    wrong = client.check_certificate("router", WILDCARD)
    assert [error.code for error in wrong.validation_errors] == ["acme_challenge_mismatch"]
    assert challenge.value in wrong.validation_errors[0].remediation

    fake.dns_set(challenge.name, "CNAME", challenge.value + ".")  # the root's dot is the same name
    seen = client.check_certificate("router", WILDCARD)
    assert seen.status == "pending_validation" and not seen.validation_errors  # being issued
    clock.sleep(fake.latencies.certificate_issue)

    issued = client.get_certificate("router", WILDCARD)
    # Seen right at 20 s, issued 10 s later, for 90 days.
    assert issued.active and issued.configured and issued.expires_at == "2026-04-01T00:00:30Z"
    assert issued.raw["validation"]["dns_configured"] is True
    assert not fake.refused


def test_a_plain_hostname_is_validated_by_its_own_records_pointing_at_the_app(clock, fake, client):
    shared = client.assign_ip("router", "shared_v4")
    client.request_certificate("router", "data.customer.org")

    fake.dns_set("data.customer.org", "A", "203.0.113.9")
    assert [error.code for error in client.check_certificate("router", "data.customer.org").validation_errors] == [
        "dns_mismatch"]
    fake.dns_set("data.customer.org", "A", shared.ip)
    client.check_certificate("router", "data.customer.org")
    clock.sleep(fake.latencies.certificate_issue)

    assert client.get_certificate("router", "data.customer.org").active


def test_the_expiry_is_settable_for_tests(clock, fake, client):
    certificate = client.request_certificate("router", WILDCARD)
    with pytest.raises(ValueError):
        fake.set_certificate_expiry(WILDCARD, clock.now())  # not issued yet
    fake.dns_set(certificate.dns_records[0].name, "CNAME", certificate.dns_records[0].value)
    client.check_certificate("router", WILDCARD)
    clock.sleep(fake.latencies.certificate_issue)

    fake.set_certificate_expiry(WILDCARD, clock.now() + 13 * 24 * 3600)

    assert client.get_certificate("router", WILDCARD).expires_at == "2026-01-14T00:00:10Z"


def test_listing_filters_and_follows_the_cursor_and_deleting_removes_the_hostname(fake, client):
    for hostname in ("a.example.com", "b.example.com", "c.example.org", WILDCARD):
        client.request_certificate("router", hostname)

    assert [entry.hostname for entry in client.list_certificates("router", page_size=1)] == [
        "*.teams.example", "a.example.com", "b.example.com", "c.example.org"]
    assert [entry.hostname for entry in client.list_certificates("router", hostname_filter="example.com")] == [
        "a.example.com", "b.example.com"]

    client.delete_certificate("router", WILDCARD)
    assert client.get_certificate("router", WILDCARD) is None
    assert {entry.status for entry in client.list_certificates("router")} == {"pending_validation"}
    assert not fake.refused


def test_a_hostname_belongs_to_one_app_and_must_be_a_hostname(fake, client):
    client.create_app("team-a", "acme", "team-a-net")
    client.request_certificate("router", WILDCARD)

    for app, hostname in (("router", WILDCARD), ("team-a", WILDCARD.upper()), ("router", "*.*.example"),
                          ("router", "no_underscores.example"), ("router", "localhost")):
        with pytest.raises(FlyAPIError) as raised:
            client.request_certificate(app, hostname)
        assert raised.value.http_status == 422, hostname


def test_the_wildcard_travels_percent_encoded_and_answers_match_the_spec(clock):
    fake = FakeFly(clock=clock, orgs=("acme",))
    with httpx.Client(base_url="https://api.machines.dev/v1", transport=fake.transport(),
                      headers={"Authorization": "Bearer t"}) as http:
        http.post("/apps", json={"name": "router", "org_slug": "acme"})
        assert http.post("/apps/router/certificates/acme", json={"hostname": WILDCARD}).status_code == 201
        assert http.get("/apps/router/certificates/%2A.teams.example").json()["hostname"] == WILDCARD
        assert http.post("/apps/router/certificates/acme", json={}).status_code == 400  # hostname is required
        assert http.post("/apps/router/ip_assignments", json={"type": "v5"}).status_code == 400
        assert http.delete("/apps/router").status_code == 202
    assert [refusal.path for refusal in fake.refused] == ["/v1/apps/router/certificates/acme",
                                                          "/v1/apps/router/ip_assignments"]
