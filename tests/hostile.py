"""A well-behaved client beside an attack: does ``/health`` still answer at once, are the models given back?

The hostile-client tests run an attack against a real gateway while :class:`HealthProbe` asks ``/health``
every few milliseconds from a thread of its own. A frozen event loop shows as a probe that waits seconds;
a loaded test machine answers well under :data:`HEALTH_BOUND` even so. The latency figures themselves
(p99 against the 100 ms target) are measured by ``bench/hostile.py``, not asserted here.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import httpx

HEALTH_BOUND = 2.0
"""Seconds the slowest ``/health`` may take during an attack: a stalled loop takes far longer."""


class HealthProbe:
    """Asks ``/health`` every ``every`` seconds while the ``with`` block runs; keeps every latency."""

    def __init__(self, url: str, every: float = 0.02) -> None:
        self._url = f"{url}/health"
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)
        self.latencies: list[float] = []
        self.failures = 0

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    ok = http.get(self._url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - start)
                self.failures += not ok
                self._stop.wait(self._every)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        deadline = time.monotonic() + 60
        while not self.latencies and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # an attack refused at once still gets its probe
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=float("inf"))

    def assert_served(self) -> None:
        """``/health`` answered 200 every time, each within :data:`HEALTH_BOUND`."""
        assert self.latencies, "the probe never ran"
        assert self.failures == 0, f"/health failed {self.failures} of {len(self.latencies)} times"
        assert self.worst < HEALTH_BOUND, f"/health took {self.worst:.2f} s during the attack"


def active_counts(url: str, key: str | None = None) -> dict[str, int]:
    """Each configured model's leases now taken (``/admin/models``; ``key``: an admin or API key)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    models = httpx.get(f"{url}/admin/models", headers=headers, timeout=30).json()["data"]
    return {m["id"]: int(m["active"]) for m in models}


def wait_idle(url: str, timeout: float = 30.0, key: str | None = None) -> dict[str, int]:
    """Every model's ``active`` count, once all are 0 or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    counts = active_counts(url, key)
    while any(counts.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        counts = active_counts(url, key)
    return counts
