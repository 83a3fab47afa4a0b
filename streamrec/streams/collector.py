"""Python's cyclic garbage collector in a worker: its pauses measured, and kept short.

Once a worker's replicas are loaded it holds a few hundred thousand long-lived Python
objects (the item catalogue, the index's id maps, Faust's services, imported modules).
Every full collection walks all of them and the event loop stops meanwhile: measured at
2,500 events/s, a pause of about 100 ms every 3 s (5% of the worker's CPU, and a stall of
every event in flight). ``gc.freeze()`` moves the objects alive at that moment to a
generation the collector never scans; full collections then walk only what was created
since (measured: about 8 ms). Frozen objects are still freed by reference counting as
usual; only a reference cycle among them would never be collected, and they are the
worker's long-lived state, made once.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram


def set_young_threshold(allocations: int) -> None:
    """Collect the young generation every ``allocations`` net allocations (0: Python's 700).

    A worker allocates and keeps a few objects per event (co-visit entries, cached items),
    so at 700 it ran about 70 young collections a second at 4,000 events/s; with 10,000
    the collector took 5.3 instead of 11.4 µs per event.
    """
    if allocations > 0:
        gc.set_threshold(allocations, *gc.get_threshold()[1:])


_frozen = 0  # objects exempted by freeze_long_lived, counted then


def freeze_long_lived() -> int:
    """Collect once, then exempt every object alive now from later collections; returns how many."""
    global _frozen
    gc.collect()
    gc.freeze()
    _frozen = gc.get_freeze_count()
    return _frozen


def frozen_objects() -> int:
    """How many objects :func:`freeze_long_lived` exempted (0 before it ran), counted when it ran:
    ``gc.get_freeze_count`` walks every frozen object, about 19 ms for a loaded worker's,
    which a metrics scrape on the event loop made every event wait."""
    return _frozen


class PauseTimer:
    """Observes every collection's pause, by generation, into ``histogram`` (from :meth:`start` to :meth:`stop`)."""

    def __init__(self, histogram: Histogram) -> None:
        self._by_generation = [histogram.labels(str(generation)) for generation in range(3)]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)

    def start(self) -> None:
        """Time collections from now on."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def stop(self) -> None:
        """Stop timing collections."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)
