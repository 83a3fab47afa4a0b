"""Prometheus metrics of one worker, served at ``GET /metrics`` on its web port."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from streamrec.streams.collector import frozen_objects

#: Buckets for per-message processing time, in seconds (100 µs to 1 s).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
FRESHNESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


STAGES = ("decode", "state", "learn", "store", "recommend", "emit", "item_owner", "item_publish", "replica")
"""Stages of the worker's own work, timed on every message (``streamrec_stage_seconds_total``)."""


class Stopwatch:
    """Times stages: each lap is the time since the previous lap (or since it was made).

    Laps add up here and reach the stages' counters at :meth:`stop` (a counter's ``inc``
    takes a lock and about a microsecond; a micro-batch laps three times per event).
    """

    __slots__ = ("_last", "_laps", "_stages")

    def __init__(self, stages: dict[str, Any]) -> None:
        self._stages = stages
        self._laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Count the time since the last lap as ``stage``."""
        now = time.perf_counter()
        self._laps[stage] = self._laps.get(stage, 0.0) + now - self._last
        self._last = now

    def stop(self, stage: str) -> None:
        """A last lap, then add every stage's time to its counter."""
        self.lap(stage)
        for name, seconds in self._laps.items():
            self._stages[name].inc(seconds)
        self._laps.clear()


class WorkerMetrics:
    """The counters and histograms a worker updates; one registry per worker."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_in = Counter(
            "streamrec_events_in", "Events read from the events topic, by outcome "
            "(applied, duplicate, rerouted, invalid).", ["outcome"], registry=self.registry)
        self.requests_in = Counter(
            "streamrec_requests_in", "Requests read from the requests topic, by outcome.",
            ["outcome"], registry=self.registry)
        self.dead_lettered = Counter(
            "streamrec_dead_lettered", "Messages sent to the dead-letter topic, by source topic.",
            ["topic"], registry=self.registry)
        self.processing_errors = Counter(
            "streamrec_processing_errors", "Messages skipped (and dead-lettered) because "
            "processing raised an unexpected error, by topic.", ["topic"], registry=self.registry)
        self.recommendations_out = Counter(
            "streamrec_recommendations_out", "Recommendations emitted, by trigger (event, request).",
            ["trigger"], registry=self.registry)
        self.processing_seconds = Histogram(
            "streamrec_processing_seconds", "Time from taking a message off the stream to "
            "handing its output to the producer (for events: per micro-batch).", ["topic"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_events = Histogram(
            "streamrec_batch_events", "Events per micro-batch: the events waiting when the worker "
            "takes the next batch (1 when it keeps up event by event).", buckets=BATCH_BUCKETS,
            registry=self.registry)
        self.assigned_partitions = Gauge(
            "streamrec_assigned_partitions", "Partitions of the events topic this worker owns "
            "(0 while the group rebalances).", registry=self.registry)
        self.catalog_items = Gauge(
            "streamrec_catalog_items", "Items in this worker's replica of the item state.",
            registry=self.registry)
        self.catalog_neighbours = Gauge(
            "streamrec_catalog_neighbours", "Entries over the co-visit lists of this worker's item "
            "replica (bounded by items x 2 model.max_neighbours; its memory grows with them).",
            registry=self.registry)
        self.catalog_pending_steps = Gauge(
            "streamrec_catalog_pending_steps", "Items this worker learnt from whose owners have not published "
            "them since (each keeps the worker's last step; emptied as the owners' states come back).",
            registry=self.registry)
        self.index_items = Gauge(
            "streamrec_index_items", "Items searchable in this worker's vector index.", registry=self.registry)
        self.index_delta_items = Gauge(
            "streamrec_index_delta_items", "Index items searched exactly, waiting for the next FAISS rebuild.",
            registry=self.registry)
        self.index_rebuilding = Gauge(
            "streamrec_index_rebuilding", "1 while the index rebuilds in the background.", registry=self.registry)

        self.ab_events = Counter(
            "streamrec_ab_events", "A/B test: events whose user had been shown a list after their previous "
            "event, by arm (the denominator of HR@k and NDCG@k).", ["arm"], registry=self.registry)
        self.ab_hits = Counter(
            "streamrec_ab_hits", "A/B test: of those, events whose item was in that list, by arm (HR@k = hits / events).",
            ["arm"], registry=self.registry)
        self.ab_ndcg = Counter(
            "streamrec_ab_ndcg", "A/B test: sum of the NDCG gains 1/log2(rank + 2) of those hits, by arm "
            "(NDCG@k = ndcg / events).", ["arm"], registry=self.registry)
        self.sequence_snapshots = Counter(
            "streamrec_sequence_snapshots", "Sequence-model snapshots read from the models topic, by outcome "
            "(served; refused: damaged or non-finite, the previous one stays).", ["outcome"],
            registry=self.registry)
        self.item_freshness = Histogram(
            "streamrec_item_freshness_seconds", "From an item owner's write of an item's new state to "
            "the item searchable with it in this worker's index (once the replica has caught up).",
            buckets=FRESHNESS_BUCKETS, registry=self.registry)
        self.event_age = Histogram(
            "streamrec_event_age_seconds", "From an event's timestamp to this worker starting on it (its "
            "micro-batch begins): the time it spent in Kafka, the consumer and Faust's buffers.",
            buckets=FRESHNESS_BUCKETS, registry=self.registry)
        self.stage_seconds = Counter(
            "streamrec_stage_seconds", "Seconds spent in each stage of the worker's own work; the rest of its "
            "CPU goes to Faust, the Kafka clients and the event loop.", ["stage"], registry=self.registry)
        self.gc_pause = Histogram(
            "streamrec_gc_pause_seconds", "Pauses of Python's garbage collector, by generation (2: a full "
            "collection; the event loop stops meanwhile).", ["generation"], buckets=PAUSE_BUCKETS,
            registry=self.registry)
        self.gc_frozen_objects = Gauge(
            "streamrec_gc_frozen_objects", "Objects exempt from garbage collection since the worker was "
            "ready (worker.gc_freeze; 0: none).", registry=self.registry)
        self.gc_frozen_objects.set_function(frozen_objects)
        self._stages = {stage: self.stage_seconds.labels(stage) for stage in STAGES}

    def watch_memory(self, parts: Callable[[], dict[str, int]]) -> None:
        """Report ``parts()`` as ``streamrec_memory_bytes{part=...}``, read once per scrape."""
        self.registry.register(_MemoryCollector(parts))

    def stopwatch(self) -> Stopwatch:
        """A stopwatch whose laps add to ``streamrec_stage_seconds_total``."""
        return Stopwatch(self._stages)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _MemoryCollector:
    """``streamrec_memory_bytes``: one figure per part of the worker's memory (see ``memory.py``)."""

    def __init__(self, parts: Callable[[], dict[str, int]]) -> None:
        self._parts = parts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("streamrec_memory_bytes", "Bytes held by each part of the worker's "
                                   "memory that has a bound or a leak to watch (RocksDB, C heap).", labels=["part"])
        for part, value in self._parts().items():
            family.add_metric([part], value)
        yield family
