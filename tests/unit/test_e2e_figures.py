"""Figures of ``bench e2e``: RSS trend and latency per window (soak), item freshness (pure functions)."""

from __future__ import annotations

import time

import pytest

from streamrec.load.e2e import _batch_size, _freshness, _gc_pauses, _rss_trend, _stages_between, _Tally, _windows
from streamrec.load.e2e_report import _full_windows


def samples(rss_at) -> list[dict[str, float]]:
    return [{"t_s": float(t), "rss_mb": rss_at(t)} for t in range(0, 601, 10)]


def test_rss_that_plateaus_after_the_warm_up_has_a_flat_slope() -> None:
    trend = _rss_trend(samples(lambda t: 200.0 + min(t, 150) * 0.5))  # grows 75 MB, then flat
    assert trend["rss_slope_mb_per_min"] == pytest.approx(0.0, abs=1e-9)
    assert (trend["rss_mb_after_warmup"], trend["rss_mb_end"]) == (275.0, 275.0)


def test_rss_that_keeps_growing_has_its_slope_in_mb_per_minute() -> None:
    trend = _rss_trend(samples(lambda t: 200.0 + t * 0.1))  # 6 MB a minute
    assert trend["rss_slope_mb_per_min"] == pytest.approx(6.0)


def test_the_memory_parts_are_those_read_first_after_the_warm_up_and_last() -> None:
    timeline = samples(lambda t: 200.0)
    for sample in timeline[::10]:
        sample["memory_mb"] = {"rocksdb_memtables": sample["t_s"] / 10}
        sample["catalog_neighbours"] = int(sample["t_s"]) * 3
    trend = _rss_trend(timeline)
    assert trend["memory_mb_after_warmup"] == {"rocksdb_memtables": 20.0}  # read at 200 s, a third of 600 s
    assert trend["memory_mb_end"] == {"rocksdb_memtables": 60.0}
    assert (trend["catalog_neighbours_after_warmup"], trend["catalog_neighbours_end"]) == (600, 1800)


def test_too_few_samples_give_no_trend() -> None:
    assert _rss_trend([{"t_s": 1.0, "rss_mb": 100.0}]) == {}


def test_windows_hold_the_percentiles_of_the_answers_inside_them() -> None:
    tally = _Tally(prefix="x-", latencies_ms=[10.0] * 99 + [500.0] + [20.0] * 10,
                   answered_s=[1.0] * 100 + [35.0] * 10)
    first, second = _windows(tally, 30.0)
    assert (first["t_s"], first["answered"], first["p50_ms"]) == (0.0, 100, 10.0)
    assert first["p99_ms"] > 10.0
    assert (second["t_s"], second["answered"], second["p50_ms"], second["p99_ms"]) == (30.0, 10, 20.0, 20.0)


def test_the_soak_table_compares_full_windows_not_the_tail_after_the_load_stopped() -> None:
    windows = [{"t_s": 0.0, "answered": 14_900}, {"t_s": 30.0, "answered": 14_970}, {"t_s": 60.0, "answered": 69}]
    assert [window["t_s"] for window in _full_windows(windows)] == [0.0, 30.0]
    assert _full_windows([]) == []


def test_each_second_holds_the_stages_per_event_applied_in_it_and_the_rest_of_the_cpu() -> None:
    def read(applied: float, learn_s: float, emit_s: float) -> dict[str, float]:
        return {'streamrec_events_in_total{outcome="applied"}': applied, 'streamrec_events_in_total{outcome="invalid"}': 7,
                'streamrec_stage_seconds_total{stage="learn"}': learn_s, 'streamrec_stage_seconds_total{stage="emit"}': emit_s}

    second = _stages_between(read(1_000, 0.010, 0.004), read(3_000, 0.070, 0.024), cpu_s=0.5)

    assert second["applied"] == 2_000
    assert second["stage_us"] == {"learn": 30.0, "emit": 10.0, "other (Faust, Kafka clients, event loop)": 210.0,
                                  "worker CPU": 250.0}
    assert _stages_between({}, read(3_000, 0.07, 0.02), cpu_s=0.5) == {}  # the first read: nothing to compare
    assert _stages_between(read(3_000, 0.07, 0.02), read(3_000, 0.07, 0.02), cpu_s=0.1) == {}  # an idle second


def test_freshness_is_read_from_the_histogram_buckets_added_during_the_step() -> None:
    def buckets(*counts: int) -> dict[str, float]:
        bounds = ("0.01", "0.05", "+Inf")
        return {f'streamrec_item_freshness_seconds_bucket{{le="{le}"}}': float(n) for le, n in zip(bounds, counts)}

    figures = _freshness(buckets(10, 10, 10), buckets(60, 109, 110))  # 100 more: 50 ≤ 10 ms, 99 ≤ 50 ms
    assert figures == {"item_updates_indexed": 100, "freshness_p50_ms_at_most": 10.0,
                       "freshness_p99_ms_at_most": 50.0}
    assert _freshness(buckets(5, 5, 5), buckets(5, 5, 5)) == {}  # nothing indexed (the relay)

    def ages(*counts: int) -> dict[str, float]:
        return {key.replace("item_freshness", "event_age"): n for key, n in buckets(*counts).items()}

    both = _freshness({**buckets(0, 0, 0), **ages(0, 0, 0)}, {**buckets(60, 109, 110), **ages(1, 2, 4)})
    assert (both["freshness_p50_ms_at_most"], both["events_aged"]) == (10.0, 4)
    assert (both["event_age_p50_ms_at_most"], both["event_age_p99_ms_at_most"]) == (50.0, float("inf"))


def test_the_mean_batch_is_read_from_the_histogram_added_during_the_step() -> None:
    before = {"streamrec_batch_events_count": 10.0, "streamrec_batch_events_sum": 10.0}
    after = {"streamrec_batch_events_count": 110.0, "streamrec_batch_events_sum": 410.0}  # 100 batches, 400 events
    assert _batch_size(before, after) == {"mean_batch_events": 4.0}
    assert _batch_size(before, before) == {}  # no batch (the relay)


def test_garbage_collection_pauses_are_read_from_the_histogram_added_during_the_step() -> None:
    def samples(full: float, full_s: float, young_s: float) -> dict[str, float]:
        return {'streamrec_gc_pause_seconds_count{generation="2"}': full,
                'streamrec_gc_pause_seconds_sum{generation="2"}': full_s,
                'streamrec_gc_pause_seconds_sum{generation="0"}': young_s}

    figures = _gc_pauses(samples(1, 0.1, 0.5), samples(5, 0.5, 1.5), {"received": 10_000})
    assert figures == {"gc_us_per_event": 140.0, "gc_full_collections": 4, "gc_full_pause_ms_mean": 100.0}
    assert _gc_pauses({}, {"other": 1.0}, {"received": 10}) == {}  # the relay serves no such metric


def test_the_report_compares_streamrec_with_and_without_the_trainer_at_each_rate() -> None:
    from streamrec.load.e2e_report import _trainer_lines

    def step(target: str, p50: float, p99: float) -> dict[str, object]:
        return {"target": target, "rate": 500.0, "latency_p50_ms": p50, "latency_p99_ms": p99,
                "received": 10, "valid_sent": 10, "cpu_percent_mean": 50.0}

    lines = _trainer_lines([step("relay", 5, 9), step("streamrec", 10.0, 20.0), step("streamrec+snapshot", 10.5, 21.0),
                            step("streamrec+trainer", 11.5, 23.0)])

    assert lines[-1].startswith("| 500 | 10.0 / 20.0 | 10.5 / 21.0 | 11.5 / 23.0 | +0.5 / +1.0 | +1.0 / +2.0 "
                                "| +1.5 / +3.0 |")
    older = _trainer_lines([step("streamrec", 10.0, 20.0), step("streamrec+trainer", 11.5, 23.0)])  # no snapshot step
    assert older[-1].startswith("| 500 | 10.0 / 20.0 |  | 11.5 / 23.0 |  |  | +1.5 / +3.0 |")
    assert _trainer_lines([step("relay", 5, 9), step("streamrec", 10.0, 20.0)]) == []


def test_the_relay_and_streamrec_pair_up_per_rate_when_the_trainer_ran_too() -> None:
    from streamrec.load.e2e_report import _pairs

    steps = [{"target": target, "rate": rate} for rate in (200.0, 500.0)
             for target in ("relay", "streamrec", "streamrec+snapshot", "streamrec+trainer")]
    pairs = _pairs(steps)

    assert [(relay["target"], mine["target"], mine["rate"]) for relay, mine in pairs] == [
        ("relay", "streamrec", 200.0), ("relay", "streamrec", 500.0)]


def test_the_time_to_emit_is_taken_from_lists_that_carry_the_workers_emit_time() -> None:
    tally = _Tally(prefix="x-")
    now_ms = int(time.time() * 1000)
    tally.on_record("out", {"event_id": "x-1", "event_ts": now_ms - 100, "emitted_ts": now_ms - 30}, "dead",
                    created_ms=now_ms - 20)
    tally.on_record("out", {"event_id": "x-2", "ts": now_ms - 100}, "dead")  # a relay's copy: no emit time

    assert tally.to_emit_ms == [70]
    assert tally.to_record_ms == [80]  # the output record's timestamp, when it has one
    assert len(tally.latencies_ms) == 2 and min(tally.latencies_ms) >= 100


def test_the_relay_pads_its_copies_to_a_lists_size_and_they_still_parse_as_the_event() -> None:
    import json

    from streamrec.config import Settings, with_section
    from streamrec.load.e2e import E2EConfig, list_record_bytes
    from streamrec.streams.relay import padded

    size = list_record_bytes(Settings(), E2EConfig(rates=[1000]), "e2e1-0-relay")
    longer = list_record_bytes(with_section(Settings(), "model", k=20), E2EConfig(rates=[1000]), "e2e1-0-relay")
    assert 500 < size < longer  # ten scored items and the list's fields; more items, more bytes
    event = json.dumps({"user_id": "u1", "item_id": "i2", "event_id": "e2e1-0-relay-7", "ts": 1}).encode()
    copy = padded(event, size)
    assert len(copy) == size and json.loads(copy) == json.loads(event)
    assert padded(event, 0) == event and padded(copy, 10) == copy  # never cut


def test_repeated_runs_of_a_step_combine_into_medians_sums_and_maxima() -> None:
    from streamrec.load.e2e_report import _runs_lines, combine_repeats

    def run(target: str, p50: float, p99: float, received: int, lag: int, phase: str = "fixed") -> dict[str, object]:
        return {"target": target, "rate": 200.0, "phase": phase, "latency_p50_ms": p50, "latency_p99_ms": p99,
                "received": received, "lag_max": lag, "latencies_ms": [p50, p99],
                "stage_us_per_event": {"learn": p50 * 10}}

    steps = [run("relay", 10, 20, 5, 1), run("streamrec", 12, 30, 5, 3), run("relay", 11, 22, 5, 2),
             run("streamrec", 14, 50, 5, 1), run("streamrec", 13, 40, 5, 2), run("streamrec", 99, 99, 5, 9, "search")]
    combined = combine_repeats(steps)

    assert [(s["target"], s["phase"]) for s in combined] == [("relay", "fixed"), ("streamrec", "fixed"),
                                                             ("streamrec", "search")]
    mine = combined[1]
    assert (mine["latency_p50_ms"], mine["latency_p99_ms"]) == (13.0, 40.0)  # medians of 3 runs
    assert mine["received"] == 15 and mine["lag_max"] == 3  # summed, highest
    assert mine["stage_us_per_event"] == {"learn": 130.0} and len(mine["latencies_ms"]) == 6
    assert mine["runs"] == [(12, 30), (14, 50), (13, 40)]
    assert combined[2] is steps[-1]  # a search step stays as run
    assert combine_repeats(steps[:2]) == steps[:2]  # nothing repeated: nothing changes
    assert "- streamrec at 200/s: 12 / 30, 14 / 50, 13 / 40" in _runs_lines(combined)


def test_the_rate_plot_draws_each_rate_once_through_the_median_of_its_runs() -> None:
    from streamrec.load.e2e_report import _medians_by_rate

    def step(rate: float, p50: float) -> dict[str, object]:
        return {"target": "relay", "rate": rate, "latency_p50_ms": p50}

    runs = [step(1000, 20.0), step(7500, 900.0), step(5000, 50.0), step(7500, 100.0), step(7500, 300.0)]
    assert _medians_by_rate(runs, "latency_p50_ms") == ([1000, 5000, 7500], [20.0, 50.0, 300.0])
