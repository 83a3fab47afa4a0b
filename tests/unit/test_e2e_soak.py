"""The soak figures of ``bench e2e --soak``: RSS trend and latency per window (pure functions)."""

from __future__ import annotations

import pytest

from streamrec.load.e2e import _rss_trend, _Tally, _windows


def samples(rss_at) -> list[dict[str, float]]:
    return [{"t_s": float(t), "rss_mb": rss_at(t)} for t in range(0, 601, 10)]


def test_rss_that_plateaus_after_the_warm_up_has_a_flat_slope() -> None:
    trend = _rss_trend(samples(lambda t: 200.0 + min(t, 150) * 0.5))  # grows 75 MB, then flat
    assert trend["rss_slope_mb_per_min"] == pytest.approx(0.0, abs=1e-9)
    assert (trend["rss_mb_after_warmup"], trend["rss_mb_end"]) == (275.0, 275.0)


def test_rss_that_keeps_growing_has_its_slope_in_mb_per_minute() -> None:
    trend = _rss_trend(samples(lambda t: 200.0 + t * 0.1))  # 6 MB a minute
    assert trend["rss_slope_mb_per_min"] == pytest.approx(6.0)


def test_too_few_samples_give_no_trend() -> None:
    assert _rss_trend([{"t_s": 1.0, "rss_mb": 100.0}]) == {}


def test_windows_hold_the_percentiles_of_the_answers_inside_them() -> None:
    tally = _Tally(prefix="x-", latencies_ms=[10.0] * 99 + [500.0] + [20.0] * 10,
                   answered_s=[1.0] * 100 + [35.0] * 10)
    first, second = _windows(tally, 30.0)
    assert (first["t_s"], first["answered"], first["p50_ms"]) == (0.0, 100, 10.0)
    assert first["p99_ms"] > 10.0
    assert (second["t_s"], second["answered"], second["p50_ms"], second["p99_ms"]) == (30.0, 10, 20.0, 20.0)
