"""fakefly: a stateful, spec-checked fake of the Fly Machines API, in-process or on 127.0.0.1 (see `app`)."""

from .app import ROUTES, FakeFly, Latencies, Refusal
from .clock import SystemClock, VirtualClock
from .faults import HostFull, NotVisible, ResponseLost, SilentRevert, Unavailable
from .server import serve
from .spec import SpecViolation

__all__ = [
    "ROUTES", "FakeFly", "HostFull", "Latencies", "NotVisible", "Refusal", "ResponseLost", "SilentRevert",
    "SpecViolation", "SystemClock", "Unavailable", "VirtualClock", "serve",
]
