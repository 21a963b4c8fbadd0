"""fakefly: a stateful, spec-checked fake of the Fly Machines API, in-process or on 127.0.0.1 (see `app`), and of
Fly's proxy with fly-replay (see `proxy`)."""

from .app import ROUTES, FakeFly, Latencies, Refusal
from .clock import SystemClock, VirtualClock
from .faults import HostFull, NotVisible, ResponseLost, SilentRevert, Unavailable
from .proxy import Delivery, FlyProxy, ProxyRefusal
from .server import serve
from .spec import SpecViolation

__all__ = [
    "ROUTES", "Delivery", "FakeFly", "FlyProxy", "HostFull", "Latencies", "NotVisible", "ProxyRefusal", "Refusal",
    "ResponseLost", "SilentRevert", "SpecViolation", "SystemClock", "Unavailable", "VirtualClock", "serve",
]
