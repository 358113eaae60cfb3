"""The replicas of an upstream model, and which one takes the next request.

Each request goes to the replica with the fewest requests in flight (ties in turn), among those that
look healthy. A replica is judged two ways: passively, by the requests it fails (``failure_threshold`` in
a row open its circuit: no requests for ``cooldown`` seconds, then a single trial request whose success
closes it again), and actively, by a ``GET`` of its model listing every ``health_interval`` seconds (a
replica that fails it is used only when no other can be). With ``routing: prefix`` a request whose
prompt starts like an earlier one's goes where that one went (rendezvous hashing over the replicas, so
the choice survives replicas coming and going), unless that replica is ``prefix_slack`` requests busier
than the least busy.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Endpoint", "EndpointState", "Pool"]


class EndpointState(StrEnum):
    UP = "up"
    DOWN = "down"
    """Its last health check failed: used only when no replica is up."""
    OPEN = "open"
    """Its circuit is open after failures in a row: no requests until the cooldown ends."""
    TRIAL = "trial"
    """The cooldown is over and its last health check (if any ran) passed: the next request decides
    whether it is up again. While its checks fail it stays open, and a passing one closes it."""


@dataclass(slots=True)
class Endpoint:
    url: str
    outstanding: int = 0
    requests: int = 0
    failures: int = 0
    failures_in_row: int = 0
    open_until: float = 0.0
    """When its open circuit lets a trial through (monotonic seconds); 0: closed."""
    trial_running: bool = False
    checked_ok: bool = True
    """What the last active health check found (True until one has run)."""
    last_error: str | None = None

    def state(self, now: float) -> EndpointState:
        if self.open_until:
            waiting = now < self.open_until or self.trial_running or not self.checked_ok
            return EndpointState.OPEN if waiting else EndpointState.TRIAL
        return EndpointState.UP if self.checked_ok else EndpointState.DOWN

    def describe(self, now: float) -> dict[str, object]:
        out: dict[str, object] = {"url": self.url, "state": self.state(now).value, "outstanding": self.outstanding,
                                  "requests": self.requests, "failures": self.failures}
        if self.last_error is not None:
            out["last_error"] = self.last_error
        return out


_PREFERENCE = (EndpointState.UP, EndpointState.TRIAL, EndpointState.DOWN)


class Pool:
    """Replica choice and health bookkeeping. Not thread-safe: used from the event loop only."""

    def __init__(self, urls: list[str], *, failure_threshold: int = 3, cooldown: float = 10.0,
                 prefix_slack: int = 4) -> None:
        self.endpoints = [Endpoint(url) for url in urls]
        self._threshold = failure_threshold
        self._cooldown = cooldown
        self._slack = prefix_slack
        self._turn = 0

    def pick(self, tried: set[str], affinity: str | None = None) -> Endpoint | None:
        """The replica for the next try of a request that already tried ``tried``; None when no replica is
        left that may take it (all tried, or their circuits open)."""
        now = time.monotonic()
        states = {id(e): e.state(now) for e in self.endpoints if e.url not in tried}
        for wanted in _PREFERENCE:
            group = [e for e in self.endpoints if states.get(id(e)) is wanted]
            if group:
                return self._choose(group, affinity)
        return None

    def _choose(self, group: list[Endpoint], affinity: str | None) -> Endpoint:
        self._turn += 1
        start = self._turn % len(group)
        rotated = group[start:] + group[:start]
        least = min(rotated, key=lambda e: e.outstanding)
        if affinity is None:
            return least
        home = max(group, key=lambda e: _rendezvous(affinity, e.url))
        return home if home.outstanding <= least.outstanding + self._slack else least

    def begin(self, endpoint: Endpoint) -> None:
        endpoint.outstanding += 1
        endpoint.requests += 1
        if endpoint.state(time.monotonic()) is EndpointState.TRIAL:
            endpoint.trial_running = True

    def end(self, endpoint: Endpoint) -> None:
        endpoint.outstanding -= 1

    def succeeded(self, endpoint: Endpoint) -> None:
        """It answered: a trial closes its circuit."""
        endpoint.failures_in_row = 0
        endpoint.open_until = 0.0
        endpoint.trial_running = False
        endpoint.checked_ok = True

    def failed(self, endpoint: Endpoint, why: str) -> None:
        """It could not answer (refused, broke off, 5xx, too slow): enough in a row, or a failed trial,
        open its circuit."""
        endpoint.failures += 1
        endpoint.failures_in_row += 1
        endpoint.last_error = why
        if endpoint.trial_running or endpoint.failures_in_row >= self._threshold:
            endpoint.open_until = time.monotonic() + self._cooldown
        endpoint.trial_running = False

    def checked(self, endpoint: Endpoint, ok: bool, why: str | None = None) -> None:
        """An active health check's finding. A replica whose circuit is open waits out its cooldown
        before a passing check closes it."""
        endpoint.checked_ok = ok
        if ok and endpoint.open_until and time.monotonic() >= endpoint.open_until:
            self.succeeded(endpoint)
        if not ok and why is not None:
            endpoint.last_error = why

    def any_up(self) -> bool:
        now = time.monotonic()
        return any(e.state(now) in (EndpointState.UP, EndpointState.TRIAL) for e in self.endpoints)

    def describe(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [e.describe(now) for e in self.endpoints]


def _rendezvous(key: str, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{url}\n{key}".encode(), digest_size=8).digest(), "big")
