"""Failures the fake can inject, each on a deterministic schedule of calls and/or with a probability.

    fake.inject("create_machine", ResponseLost(408))                  # the next create happens, answers 408
    fake.inject("get_machine", Unavailable(503), calls=[1, 2])         # the next two GETs fail
    fake.inject("*", Unavailable(502), probability=0.05)               # any call, drawn from the fake's seed

`calls` counts the action's calls from the moment of injection, starting at 1. Without `calls` or
`probability` a fault hits the next call only.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Unavailable:
    """The call is refused before anything happens (safe for the client to retry)."""

    status: int = 503


@dataclass(frozen=True)
class ResponseLost:
    """The call is carried out, then answered with this status: the ambiguous create of reference section 13."""

    status: int = 408


@dataclass(frozen=True)
class NotVisible:
    """create_machine: the new Machine answers 404 to reads (get, wait, lists) for this many simulated seconds."""

    seconds: float = 2.0


@dataclass(frozen=True)
class SilentRevert:
    """update_machine: reports success, then the Machine comes back on its previous config and version
    when the update settles (flyctl PR #4921)."""


@dataclass(frozen=True)
class HostFull:
    """create_machine with a mounted volume: 412 `volume_placement_capacity`, as when the volume's host is full.
    A create without a volume is not affected (but still counts towards the schedule)."""


Fault = Unavailable | ResponseLost | NotVisible | SilentRevert | HostFull

_ONLY_FOR = {NotVisible: "create_machine", SilentRevert: "update_machine", HostFull: "create_machine"}


@dataclass
class _Rule:
    action: str
    fault: Fault
    calls: frozenset[int]
    probability: float
    seen: int = 0

    @property
    def spent(self) -> bool:
        return self.probability == 0 and all(call <= self.seen for call in self.calls)


class FaultPlan:
    def __init__(self, rng: random.Random):
        self._rng = rng
        self._rules: list[_Rule] = []

    def inject(self, action: str, fault: Fault, *, calls: Iterable[int] | None = None,
               probability: float = 0.0) -> None:
        """`action` is a fakefly action name (see `fakefly.app.ROUTES`), or "*" for any."""
        only_for = _ONLY_FOR.get(type(fault))
        if only_for is not None and action != only_for:
            raise ValueError(f"{type(fault).__name__} applies to {only_for}, not {action}")
        if not 0 <= probability <= 1:
            raise ValueError("probability is between 0 and 1")
        schedule = frozenset(calls) if calls is not None else frozenset() if probability else frozenset({1})
        self._rules.append(_Rule(action, fault, schedule, probability))

    def draw(self, action: str) -> list[Fault]:
        """The faults that hit this call of `action`; advances every matching rule's count."""
        hits = []
        for rule in self._rules:
            if rule.action not in (action, "*"):
                continue
            rule.seen += 1
            if rule.seen in rule.calls or (rule.probability and self._rng.random() < rule.probability):
                hits.append(rule.fault)
        self._rules = [rule for rule in self._rules if not rule.spent]
        return hits
