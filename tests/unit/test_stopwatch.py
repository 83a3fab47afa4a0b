"""The stage stopwatch: laps add up per stage and reach ``streamrec_stage_seconds_total`` at stop."""

from __future__ import annotations

import itertools

import pytest

from streamrec.streams import metrics as metrics_module
from streamrec.streams.metrics import WorkerMetrics


def stage_seconds(metrics: WorkerMetrics, stage: str) -> float:
    return metrics.registry.get_sample_value("streamrec_stage_seconds_total", {"stage": stage}) or 0.0


def test_laps_add_up_per_stage_and_are_counted_at_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = itertools.count(100.0, 0.5)  # every reading half a second after the last
    monkeypatch.setattr(metrics_module.time, "perf_counter", lambda: next(clock))
    metrics = WorkerMetrics()
    watch = metrics.stopwatch()
    for _ in range(3):
        watch.lap("decode")
        watch.lap("learn")
    assert stage_seconds(metrics, "decode") == stage_seconds(metrics, "learn") == 0.0  # not yet
    watch.stop("emit")
    assert [stage_seconds(metrics, stage) for stage in ("decode", "learn", "emit")] == [1.5, 1.5, 0.5]
    watch.stop("emit")  # it goes on: only the time since the last lap is added
    assert [stage_seconds(metrics, stage) for stage in ("decode", "learn", "emit")] == [1.5, 1.5, 1.0]
