"""Certificates, IP assignments and the fake DNS they are validated against.

Shapes follow DOCS `machines/api/certificates-resource` and the OpenAPI document (`CertificateDetail`,
`CertificateCheckResponse`, `IPAssignment`). What the docs leave out, and the fake chooses (docs/fly.md):

- A certificate is validated whenever it is read (Fly re-checks in the background; `check` asks for it now).
  A wildcard needs the `_acme-challenge` CNAME to its flydns.net target (DNS-01, DOCS `networking/custom-domain`);
  a plain hostname may also be validated by TLS-ALPN/HTTP once its A/AAAA/CNAME point at the app. Once
  validated it is issued `Latencies.certificate_issue` later, for 90 days (Let's Encrypt's lifetime).
- `validation_errors` list records that exist but point elsewhere (codes `acme_challenge_mismatch`,
  `dns_mismatch`); a record not created yet is no error, the certificate simply stays `pending_validation`.
- IP types are flyctl's (`v4`, `shared_v4`, `v6`, `private_v6`); the shared IPv4 is one address for everyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .state import iso

CERTIFICATE_LIFETIME_SECONDS = 90 * 24 * 3600
SHARED_V4 = "66.241.124.100"
IP_TYPES = frozenset({"v4", "shared_v4", "v6", "private_v6"})
DNS_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT"})
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})+")


def dns_name(name: str) -> str:
    """Names compare case-insensitively, with or without the root's trailing dot."""
    return name.strip().lower().rstrip(".")


class FakeDNS:
    """What the world's resolvers answer, as the test says: `set("_acme-challenge.example.com", "CNAME", "...")`."""

    def __init__(self):
        self._records: dict[tuple[str, str], list[str]] = {}

    def set(self, name: str, record_type: str, *values: str) -> None:
        """Replaces the records of that name and type; no values removes them."""
        record_type = record_type.upper()
        if record_type not in DNS_TYPES:
            raise ValueError(f"record type {record_type!r}: one of {sorted(DNS_TYPES)}")
        key = (dns_name(name), record_type)
        if values:
            self._records[key] = [dns_name(value) if record_type == "CNAME" else value for value in values]
        else:
            self._records.pop(key, None)

    def get(self, name: str, record_type: str) -> list[str]:
        return list(self._records.get((dns_name(name), record_type.upper()), []))


@dataclass
class IPAssignmentRecord:
    ip: str
    app_name: str
    type: str
    region: str
    created_at: float
    service_name: str | None = None
    network: str | None = None  # a private (Flycast) address: the network it is reachable from

    @property
    def public(self) -> bool:
        return self.type != "private_v6"

    @property
    def v6(self) -> bool:
        return ":" in self.ip

    def to_json(self) -> dict:
        body = {"ip": self.ip, "region": self.region, "shared": self.type == "shared_v4",
                "created_at": iso(self.created_at)}
        return body | ({"service_name": self.service_name} if self.service_name else {})


@dataclass
class CertificateRecord:
    hostname: str
    app_name: str
    created_at: float
    challenge_target: str  # the per-certificate flydns.net name `_acme-challenge` must point to
    app_value: str
    org_value: str
    updated_at: float = 0.0
    validated_at: float | None = None  # when the DNS was first seen right (issuance follows)
    issued_at: float | None = None
    expires_at: float | None = None
    acme_dns_configured: bool = False
    validation: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)

    @property
    def base(self) -> str:
        """The name the DNS records hang from: `*.teams.example` -> `teams.example`."""
        return self.hostname.removeprefix("*.")

    @property
    def wildcard(self) -> bool:
        return self.hostname.startswith("*.")

    def covers(self, hostname: str) -> bool:
        """A wildcard covers exactly one more label (`a.teams.example`, not `a.b.teams.example`)."""
        if not self.wildcard:
            return hostname == self.hostname
        label, _, rest = hostname.partition(".")
        return bool(label) and rest == self.base

    @property
    def status(self) -> str:
        return "active" if self.issued_at is not None else "pending_validation"

    def validate(self, dns: FakeDNS, ips: list[IPAssignmentRecord], now: float, issue_seconds: float) -> None:
        """Looks at the DNS as Fly's checker would, and issues the certificate `issue_seconds` after the records
        are first right. An issued certificate stays issued (renewal is not modelled)."""
        challenge = dns.get(f"_acme-challenge.{self.base}", "CNAME")
        addresses = dns.get(self.hostname, "A") + dns.get(self.hostname, "AAAA")
        cnames = dns.get(self.hostname, "CNAME")
        ownership = dns.get(f"_fly-ownership.{self.base}", "TXT")
        app_addresses = {ip.ip for ip in ips if ip.public}
        acme_dns = self.acme_dns_configured = self.challenge_target in challenge
        points_here = (bool(addresses) and set(addresses) <= app_addresses) or f"{self.app_name}.fly.dev" in cnames
        self.validation = {"dns_configured": points_here, "alpn_configured": points_here and not self.wildcard,
                           "http_configured": points_here and not self.wildcard,
                           "ownership_txt_configured": bool({self.app_value, self.org_value} & set(ownership))}
        self.errors = []
        if challenge and not acme_dns:
            self.errors.append(self._error(now, "acme_challenge_mismatch",
                                           f"_acme-challenge.{self.base} points to {challenge[0]}, not to "
                                           f"{self.challenge_target}",
                                           f"set a CNAME from _acme-challenge.{self.base} to {self.challenge_target}"))
        if (addresses or cnames) and not points_here:
            self.errors.append(self._error(now, "dns_mismatch",
                                           f"{self.hostname} resolves to {', '.join(addresses + cnames)}, not to "
                                           f"this app",
                                           f"point {self.hostname} at {self.app_name}.fly.dev or the app's IPs"))
        if self.issued_at is not None:
            return
        valid = acme_dns or (points_here and not self.wildcard)
        if not valid:
            self.validated_at = None
            return
        if self.validated_at is None:
            self.validated_at = now
            self.updated_at = now
        if now >= self.validated_at + issue_seconds:
            self.issued_at = self.validated_at + issue_seconds
            self.expires_at = self.issued_at + CERTIFICATE_LIFETIME_SECONDS
            self.updated_at = self.issued_at

    @staticmethod
    def _error(now: float, code: str, message: str, remediation: str) -> dict:
        return {"code": code, "message": message, "remediation": remediation, "timestamp": iso(now)}

    def summary_json(self) -> dict:
        configured = self.issued_at is not None
        return {"hostname": self.hostname, "status": self.status, "configured": configured,
                "acme_requested": True, "acme_dns_configured": self.acme_dns_configured,
                "acme_alpn_configured": self.validation.get("alpn_configured", False),
                "acme_http_configured": self.validation.get("http_configured", False),
                "ownership_txt_configured": self.validation.get("ownership_txt_configured", False),
                "has_custom_certificate": False, "has_fly_certificate": configured,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at or self.created_at)}

    def detail_json(self, ips: list[IPAssignmentRecord]) -> dict:
        issued = []
        if self.issued_at is not None:
            issued = [{"source": "fly", "status": "active", "created_at": iso(self.issued_at),
                       "expires_at": iso(self.expires_at), "issuer": None,
                       "issued": [{"type": kind, "expires_at": iso(self.expires_at),
                                   "certificate_authority": "lets_encrypt"} for kind in ("ecdsa", "rsa")]}]
        public = [ip for ip in ips if ip.public]
        return {
            "hostname": self.hostname, "configured": self.issued_at is not None, "acme_requested": True,
            "status": self.status, "dns_provider": "unknown", "rate_limited_until": None, "certificates": issued,
            "validation": dict(self.validation),
            "dns_requirements": {
                "a": [ip.ip for ip in public if not ip.v6], "aaaa": [ip.ip for ip in public if ip.v6],
                "cname": f"{self.app_name}.fly.dev",
                "acme_challenge": {"name": f"_acme-challenge.{self.base}", "target": self.challenge_target},
                "ownership": {"name": f"_fly-ownership.{self.base}", "app_value": self.app_value,
                              "org_value": self.org_value}},
            "validation_errors": list(self.errors)}

    def check_json(self, ips: list[IPAssignmentRecord], dns: FakeDNS) -> dict:
        addresses = dns.get(self.hostname, "A") + dns.get(self.hostname, "AAAA")
        challenge = dns.get(f"_acme-challenge.{self.base}", "CNAME")
        ownership = dns.get(f"_fly-ownership.{self.base}", "TXT")
        records = {"a": dns.get(self.hostname, "A"), "aaaa": dns.get(self.hostname, "AAAA"),
                   "cname": dns.get(self.hostname, "CNAME"), "resolved_addresses": addresses}
        if challenge:
            records["acme_challenge_cname"] = challenge[0]
        if ownership:
            records["ownership_txt"] = ownership[0]
        return self.detail_json(ips) | {"dns_records": records}
