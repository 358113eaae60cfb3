"""Memory given back to the system once the work that needed it is done (glibc's malloc; a no-op elsewhere).

glibc keeps what a thread frees for that thread's later allocations. After hours of audio decoded frame
by frame, or a 15 MB body read and refused, the process would keep its peak for good: its RSS climbs with
each attack and never comes down. Two settings bound that:

* :func:`set_up` fixes the size from which an allocation gets pages of its own, handed back when it is
  freed (1 MiB; glibc otherwise raises that size to the largest block freed so far, up to 32 MiB, so a
  freed 15 MB body makes the next one come from the heap, where it stays);
* :func:`give_back` hands the free pages of every arena back (``malloc_trim``): the gateway's worker
  threads call it after a heavy job (:class:`~gateway.workers.Workers`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

__all__ = ["give_back", "set_up"]

log = logging.getLogger("syn4pse.memory")

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter number for the mmap threshold (glibc's malloc.h)."""
MMAP_THRESHOLD = 1024 * 1024


def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # another C library (musl, macOS): its own policy stands
    return libc


_LIBC = _glibc()


def set_up(mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Give allocations of ``mmap_threshold`` bytes or more pages of their own; whether it was set."""
    if _LIBC is None:
        return False
    done = bool(_LIBC.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    if not done:
        log.warning("could not set malloc's mmap threshold; freed memory may stay with the process")
    return done


def give_back() -> bool:
    """Return the free pages of every malloc arena to the system; whether any were."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False
