"""The lease ledger the Fly backend is built with: the leases it holds, kept as `MachineLease` rows, so that one
left by a run that died (a killed deploy) can be released by `reconcile` or by the next run on that Machine."""

from datetime import datetime

from django.utils import timezone

from .backends.base import LeaseLedger, LeaseRecord
from .holders import holder_is_gone, new_holder
from .models import MachineLease


class MachineLeaseLedger(LeaseLedger):
    def new_holder(self) -> str:
        return new_holder()

    def record(self, lease: LeaseRecord) -> None:
        MachineLease.objects.update_or_create(app=lease.app, machine_id=lease.machine_id, defaults={
            "nonce": lease.nonce, "holder": lease.holder, "expires_at": lease.expires_at})

    def refresh(self, app: str, machine_id: str, nonce: str, expires_at: datetime) -> None:
        MachineLease.objects.filter(app=app, machine_id=machine_id, nonce=nonce).update(expires_at=expires_at)

    def forget(self, app: str, machine_id: str, nonce: str) -> None:
        MachineLease.objects.filter(app=app, machine_id=machine_id, nonce=nonce).delete()

    def lookup(self, app: str, machine_id: str) -> LeaseRecord | None:
        row = MachineLease.objects.filter(app=app, machine_id=machine_id).first()
        return _record(row) if row else None

    def abandoned(self) -> list[LeaseRecord]:
        return [lease for lease in map(_record, MachineLease.objects.order_by("pk")) if self.is_abandoned(lease)]

    def is_abandoned(self, lease: LeaseRecord) -> bool:
        return lease.expires_at <= timezone.now() or holder_is_gone(lease.holder)


def _record(row: MachineLease) -> LeaseRecord:
    return LeaseRecord(row.app, row.machine_id, row.nonce, row.holder, row.expires_at)
