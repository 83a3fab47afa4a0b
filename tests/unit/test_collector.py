"""The garbage collector's settings in a worker: long-lived objects frozen, pauses timed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streamrec.streams.collector import PauseTimer, freeze_long_lived, set_young_threshold
from streamrec.streams.metrics import WorkerMetrics


class Node:
    """A gc-tracked object that can be part of a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def samples(metrics: WorkerMetrics, generation: str) -> float:
    return metrics.registry.get_sample_value("streamrec_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_frozen_objects_are_out_of_the_collectors_walk_and_new_cycles_are_still_collected(unfrozen: None) -> None:
    long_lived = [Node() for _ in range(10_000)]
    frozen = freeze_long_lived()
    assert frozen >= len(long_lived)
    # the gauge reports the count taken at the freeze (counting again walks every frozen object)
    assert WorkerMetrics().registry.get_sample_value("streamrec_gc_frozen_objects") == frozen
    tracked = {id(obj) for obj in gc.get_objects()}  # what a full collection walks
    assert not any(id(node) in tracked for node in long_lived)

    first, second = Node(), Node()
    first.other, second.other = second, first  # a cycle made after the freeze
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None


def test_pause_timer_observes_each_collection_by_generation_until_stopped() -> None:
    metrics = WorkerMetrics()
    timer = PauseTimer(metrics.gc_pause)
    gc.disable()  # only the collections below: counts are exact
    timer.start()
    timer.start()  # idempotent: one observation per collection
    try:
        gc.collect(0)
        gc.collect(2)
        assert samples(metrics, "0") >= 1
        full = samples(metrics, "2")
        assert full >= 1
        gc.collect(2)
        assert samples(metrics, "2") == full + 1
        timer.stop()
        gc.collect(2)
        assert samples(metrics, "2") == full + 1
        assert timer not in gc.callbacks
    finally:
        timer.stop()
        gc.enable()


def test_the_young_threshold_is_set_and_zero_keeps_pythons() -> None:
    before = gc.get_threshold()
    try:
        set_young_threshold(0)
        assert gc.get_threshold() == before
        set_young_threshold(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
    finally:
        gc.set_threshold(*before)
