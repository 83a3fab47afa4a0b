"""A trainer beside a worker: snapshots are published, swapped in mid-stream without a gap, a corrupted one refused."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamrec.config import Settings
from streamrec.load.demo import streamrec_process
from streamrec.models.online_recommender import MODEL_VERSION
from streamrec.streams.model_topic import snapshot_records

from tests.harness import collect, metric, send, topic_names, values, worker_env

pytestmark = pytest.mark.integration

SMALL_SEQUENCE_MODEL = {
    "STREAMREC_SEQUENCE__DIM": "16", "STREAMREC_SEQUENCE__MAX_LEN": "10", "STREAMREC_SEQUENCE__BATCH_SIZE": "32",
    "STREAMREC_SEQUENCE__TRAIN_EVERY_EVENTS": "150", "STREAMREC_SEQUENCE__TRAIN_STEPS": "10",
    "STREAMREC_SEQUENCE__TRAIN_EVERY_S": "3", "STREAMREC_SEQUENCE__MAX_QUALITY_DROP": "1.0",
}


def rule_events(start: int, count: int) -> list[dict[str, Any]]:
    """Users step through items by a fixed rule (each next item follows from the last one)."""
    events = []
    for n in range(start, start + count):
        user, step = n % 50, n // 50
        events.append({"user_id": f"user{user}", "item_id": f"item{(user * 7 + step * 3) % 40}", "type": "click",
                       "event_id": f"seq-{n}", "ts": 1_700_000_000_000 + n})
    return events


def send_slowly(settings: Settings, events: list[dict[str, Any]], per_second: float) -> None:
    names = topic_names(settings)
    for start in range(0, len(events), 25):
        batch = events[start:start + 25]
        send(settings, names.events, [(e["user_id"].encode(), json.dumps(e).encode()) for e in batch])
        time.sleep(len(batch) / per_second)


def send_until(settings: Settings, served: int, per_second: float, timeout_s: float = 90) -> list[dict[str, Any]]:
    """Send rule events slowly until the worker has swapped in ``served`` snapshots, then 150 more.

    Waiting on the worker, not the clock, keeps the test independent of how long the trainer
    takes to start and join: a trainer that joined late would read every event in one round.
    """
    sent: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while metric(settings, 'streamrec_sequence_snapshots_total{outcome="served"}') < served:
        assert time.monotonic() < deadline, f"{served} snapshots not served after {len(sent)} events"
        sent += rule_events(len(sent), 25)
        send_slowly(settings, sent[-25:], per_second)
    sent += rule_events(len(sent), 150)
    send_slowly(settings, sent[-150:], per_second)
    return sent


def pushed(settings: Settings, wanted: set[str], timeout_s: float = 90) -> list[dict[str, Any]]:
    names = topic_names(settings)
    collect(settings, names.recommendations,
            lambda records: wanted <= {v.get("event_id") for v in values(records, trigger="event")}, timeout_s)
    time.sleep(1)
    return [v for v in values(collect(settings, names.recommendations, lambda r: False, 4), trigger="event")
            if v.get("event_id") in wanted]


def test_snapshots_swap_in_mid_stream_with_no_gap_and_a_corrupted_one_is_refused(
        settings: Settings, start_worker: Any, tmp_path: Path) -> None:
    names = topic_names(settings)
    worker = start_worker(settings)
    with streamrec_process(["trainer"], settings, tmp_path / "trainer.log",
                           env={**worker_env(settings), **SMALL_SEQUENCE_MODEL}):
        first = send_until(settings, served=2, per_second=60)  # online model, then two snapshots
        records = pushed(settings, {e["event_id"] for e in first})
    trainer_log = (tmp_path / "trainer.log").read_text(errors="replace")

    # Exactly one recommendation per event, none with an error, while snapshots were swapped.
    counts = Counter(v["event_id"] for v in records)
    assert counts == Counter({e["event_id"]: 1 for e in first}), (worker.log()[-2000:], trainer_log[-2000:])
    assert not [v for v in records if v.get("error")]
    # In event order, the lists switch from the online model to successive sequence snapshots, never back.
    order = {e["event_id"]: n for n, e in enumerate(first)}
    versions = [v["model_version"] for v in sorted(records, key=lambda v: order[v["event_id"]])]
    served = list(dict.fromkeys(versions))  # distinct, in order of first use
    assert served[0] == MODEL_VERSION, served
    assert len(served) >= 3 and all(v.startswith(f"{MODEL_VERSION}+seq-") for v in served[1:]), (served, trainer_log)
    for earlier, later in zip(versions, versions[1:]):
        assert served.index(later) >= served.index(earlier), "a list went back to an older model"
    assert metric(settings, 'streamrec_sequence_snapshots_total{outcome="served"}') >= len(served) - 1

    # A snapshot whose bytes arrive intact but do not hold a valid model is refused; the last one stays.
    published = re.findall(r"round \d+: published (\S+)", trainer_log)
    deadline = time.monotonic() + 30
    while metric(settings, 'streamrec_sequence_snapshots_total{outcome="served"}') < len(published):
        assert time.monotonic() < deadline, worker.log()[-2000:]
        time.sleep(0.2)
    last = f"{MODEL_VERSION}+{published[-1]}"
    for key, value in snapshot_records("seq-corrupted", b"not a torch checkpoint" * 100):
        send(settings, names.models, [(key, value)])
    deadline = time.monotonic() + 30
    while metric(settings, 'streamrec_sequence_snapshots_total{outcome="refused"}') < 1:
        assert time.monotonic() < deadline, worker.log()[-2000:]
        time.sleep(0.2)
    after = rule_events(len(first), 100)
    send_slowly(settings, after, per_second=200)
    later = pushed(settings, {e["event_id"] for e in after})
    assert len(later) == len(after) and {v["model_version"] for v in later} == {last}
    assert "seq-corrupted refused" in worker.log()
