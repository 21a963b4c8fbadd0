"""What the Fly Machines API answers, as frozen dataclasses (each keeps the raw JSON in `raw`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class App:
    """`status` and `id` are None when only the create's answer is known (Fly's create returns little)."""

    name: str
    id: str | None
    org_slug: str | None
    network: str | None
    status: str | None
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> App:
        return cls(name=body["name"], id=body.get("id"), org_slug=(body.get("organization") or {}).get("slug"),
                   network=body.get("network"), status=body.get("status"), raw=body)


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    region: str
    size_gb: int
    state: str
    zone: str | None
    attached_machine_id: str | None
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Volume:
        return cls(id=body["id"], name=body["name"], region=body["region"], size_gb=body["size_gb"],
                   state=body["state"], zone=body.get("zone"),
                   attached_machine_id=body.get("attached_machine_id") or None, raw=body)


@dataclass(frozen=True)
class Machine:
    """`instance_id` is the version (compare it after an update: Fly may silently revert). From the org-wide
    listing, `config` holds only image, guest and metadata."""

    id: str
    app_name: str
    name: str
    state: str
    region: str
    instance_id: str
    image: str | None
    metadata: Mapping[str, str]
    private_ip: str | None
    nonce: str | None  # only when created with a lease
    config: Mapping[str, Any] = field(compare=False, repr=False)
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def check_statuses(self) -> dict[str, tuple[str, str]]:
        """Each service check's (status, output) by name: `passing`, `warning` or `critical`. Only a single
        Machine read carries them, and each only once it has first run after a start (until then it is absent)."""
        return {check["name"]: (check.get("status", ""), check.get("output", ""))
                for check in self.raw.get("checks") or [] if "name" in check}

    @property
    def configured_check_count(self) -> int:
        """How many checks the config defines (top-level and per service): each must report before the Machine
        counts as healthy."""
        return len(self.config.get("checks") or {}) + sum(len(service.get("checks") or [])
                                                         for service in self.config.get("services") or [])

    @classmethod
    def from_json(cls, body: Mapping[str, Any], app_name: str | None = None) -> Machine:
        config = body.get("config") or {}
        return cls(id=body["id"], app_name=app_name or body["app_name"], name=body["name"], state=body["state"],
                   region=body["region"], instance_id=body.get("version") or body["instance_id"],
                   image=config.get("image"), metadata=config.get("metadata") or {},
                   private_ip=body.get("private_ip"), nonce=body.get("nonce"), config=config, raw=body)


@dataclass(frozen=True)
class Lease:
    nonce: str
    expires_at: int  # unix seconds
    owner: str | None
    description: str | None
    version: str | None
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Lease:
        # DOCS wrap the lease as {"status": "success", "data": {...}}; the OpenAPI document has it flat.
        inner = body["data"] if isinstance(body.get("data"), Mapping) else body
        return cls(nonce=inner["nonce"], expires_at=inner["expires_at"], owner=inner.get("owner"),
                   description=inner.get("description"), version=inner.get("version"), raw=body)


@dataclass(frozen=True)
class WaitResult:
    state: str
    version: str | None  # the Machine's version now: compare with the one you updated to
    event_id: str | None


@dataclass(frozen=True)
class DNSRecord:
    """One record to create at the DNS provider for a certificate: `type` A, AAAA or CNAME, `name`, `value`."""

    type: str
    name: str
    value: str


@dataclass(frozen=True)
class CertificateValidationError:
    code: str | None
    message: str
    remediation: str | None


@dataclass(frozen=True)
class Certificate:
    """A hostname on an app and its certificate (DOCS machines/api/certificates-resource). `status` is
    `active` once issued, else `pending_validation` (or `pending_ownership`); `expires_at` is the issued
    certificate's expiry (ISO 8601), None until then. `dns_records` are the records to create, in the order
    a person should create them: the ACME challenge first (a wildcard needs it), then the name's own."""

    hostname: str
    status: str
    configured: bool
    expires_at: str | None
    dns_records: tuple[DNSRecord, ...]
    validation_errors: tuple[CertificateValidationError, ...]
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Certificate:
        requirements = body.get("dns_requirements") or {}
        hostname = body["hostname"]
        records: list[DNSRecord] = []
        challenge = requirements.get("acme_challenge") or {}
        if challenge.get("name") and challenge.get("target"):
            records.append(DNSRecord("CNAME", challenge["name"], challenge["target"]))
        records += [DNSRecord("A", hostname, address) for address in requirements.get("a") or []]
        records += [DNSRecord("AAAA", hostname, address) for address in requirements.get("aaaa") or []]
        if not (requirements.get("a") or requirements.get("aaaa")) and requirements.get("cname"):
            records.append(DNSRecord("CNAME", hostname, requirements["cname"]))
        expiries = [entry["expires_at"] for entry in body.get("certificates") or []
                    if entry.get("status") == "active" and entry.get("expires_at")]
        return cls(hostname=hostname, status=body.get("status") or "", configured=bool(body.get("configured")),
                   expires_at=min(expiries) if expiries else None, dns_records=tuple(records),
                   validation_errors=tuple(CertificateValidationError(error.get("code"), error.get("message") or "",
                                                                      error.get("remediation"))
                                           for error in body.get("validation_errors") or []),
                   raw=body)


@dataclass(frozen=True)
class CertificateSummary:
    """A row of the certificate listing (no DNS requirements: read the certificate for those)."""

    hostname: str
    status: str
    configured: bool
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CertificateSummary:
        return cls(hostname=body["hostname"], status=body.get("status") or "",
                   configured=bool(body.get("configured")), raw=body)


@dataclass(frozen=True)
class IPAssignment:
    ip: str
    region: str | None
    shared: bool
    service_name: str | None
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def private(self) -> bool:
        """A private (Flycast) IPv6 address, fdaa::/16: reachable inside the org's network only."""
        return self.ip.lower().startswith("fdaa:")

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> IPAssignment:
        return cls(ip=body["ip"], region=body.get("region"), shared=bool(body.get("shared")),
                   service_name=body.get("service_name") or None, raw=body)
