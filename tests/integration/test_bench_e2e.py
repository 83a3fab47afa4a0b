"""``bench e2e`` end to end on the test broker: a relay and a streamrec worker, every event answered, a report."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.config import Settings
from streamrec.load.e2e import E2EConfig, benchmark_e2e
from streamrec.load.e2e_report import write_report

pytestmark = pytest.mark.integration


def test_a_small_e2e_run_answers_every_event_and_writes_its_report(settings: Settings, tmp_path: Path) -> None:
    config = E2EConfig(rates=[100.0], duration_s=3.0, warmup_events=200, users=500, items=100, invalid_every=50)
    result = benchmark_e2e(settings, config, broker=settings.kafka.broker, say=lambda _: None)

    relay, mine = result["steps"]
    assert (relay["target"], mine["target"]) == ("relay", "streamrec")
    for step in (relay, mine):
        assert step["valid_sent"] == 294 and step["received"] == step["valid_sent"], step
        assert step["duplicates"] == 0 and 0 < step["latency_p50_ms"] <= step["latency_p99_ms"] < 10_000
        assert step["timeline"] and step["rss_mb_max"] > 0
    assert mine["dead_lettered"] == mine["invalid_sent"] == 6  # the relay forwards them; streamrec refuses them
    stages = mine["stage_us_per_event"]
    assert stages["learn"] > 0 and stages["recommend"] > 0 and stages["worker CPU"] > sum(
        value for name, value in stages.items() if name in ("decode", "state", "learn", "store", "recommend", "emit"))
    assert set(relay["stage_us_per_event"]) == {"other (Faust, Kafka clients, event loop)", "worker CPU"}
    assert mine["item_updates_indexed"] > 0 and mine["freshness_p99_ms_at_most"] <= 30_000  # owner → index
    assert "freshness_p50_ms_at_most" not in relay
    # second by second, where streamrec's time per event went (the relay has no stages)
    seconds = [sample for sample in mine["timeline"] if "stage_us" in sample]
    assert seconds and sum(sample["applied"] for sample in seconds) <= mine["received"]
    assert all(sample["stage_us"]["worker CPU"] > 0 and "recommend" in sample["stage_us"] for sample in seconds)
    assert not any("stage_us" in sample for sample in relay["timeline"])
    report = write_report(result, tmp_path / "report")
    text = report.read_text()
    assert "| 100 |" in text and "| streamrec 100/s |" in text and all((tmp_path / "report" / png).stat().st_size > 10_000
                                     for png in ("latency_cdf.png", "vs_rate.png", "timeline.png", "stages.png"))
    assert "![worker time per event over the step](stages.png)" in text


def test_a_short_soak_reports_windows_the_rss_trend_and_its_plot(settings: Settings, tmp_path: Path) -> None:
    config = E2EConfig(rates=[60.0], warmup_events=100, users=1_000_000, items=100, invalid_every=50,
                       soak_minutes=0.15, window_s=3.0)
    result = benchmark_e2e(settings, config, broker=settings.kafka.broker, say=lambda _: None)

    assert [(step["target"], step["phase"]) for step in result["steps"]] == [("relay", "soak"), ("streamrec", "soak")]
    for step in result["steps"]:
        assert step["valid_sent"] == 530 and step["received"] == step["valid_sent"], step
        assert step["distinct_users"] > 500  # new users keep arriving
        assert len(step["windows"]) >= 3 and sum(w["answered"] for w in step["windows"]) == step["received"]
        assert "rss_slope_mb_per_min" in step and step["rss_mb_end"] > 0
        # the worker's memory parts and co-visit entries are read; the relay has neither
        read = [sample for sample in step["timeline"] if "memory_mb" in sample]
        assert bool(read) == (step["target"] == "streamrec") and all("catalog_neighbours" in s for s in read)
    report = write_report(result, tmp_path / "report")
    text = report.read_text()
    assert "## Soak: 60 events/s" in text and (tmp_path / "report" / "soak.png").stat().st_size > 10_000
    # one long step per target: no per-rate table or plots, which would be empty or a single point
    assert "| events/s | relay p50" not in text and not (tmp_path / "report" / "vs_rate.png").exists()


def test_with_trainer_runs_steps_serving_the_sequence_model_without_and_with_the_trainer(settings: Settings, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"DIM": "16", "MAX_LEN": "10", "BATCH_SIZE": "32", "TRAIN_EVERY_EVENTS": "100",
                        "TRAIN_STEPS": "5"}.items():
        monkeypatch.setenv(f"STREAMREC_SEQUENCE__{name}", value)  # the trainer subprocess reads them
    config = E2EConfig(rates=[100.0], duration_s=3.0, warmup_events=300, users=200, items=100, invalid_every=50,
                       trainer=True)
    result = benchmark_e2e(settings, config, broker=settings.kafka.broker, say=lambda _: None)

    assert [step["target"] for step in result["steps"]] == ["relay", "streamrec", "streamrec+snapshot",
                                                            "streamrec+trainer"]
    for step in result["steps"][2:]:
        assert step["received"] == step["valid_sent"] == 294 and step["dead_lettered"] == 6, step
    text = write_report(result, tmp_path / "report").read_text()
    assert "| events/s | streamrec p50 / p99 ms | serving a snapshot p50 / p99 ms | with trainer p50 / p99 ms |" in text
