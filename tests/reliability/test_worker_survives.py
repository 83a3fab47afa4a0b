"""A worker survives what production throws at it: garbage input and hard crashes."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from streamrec.config import Settings
from streamrec.load.request import request_recommendations
from tests.harness import collect, send, topic_names, values

pytestmark = pytest.mark.integration


def random_garbage(count: int, seed: int) -> list[bytes]:
    """Seeded random payloads: raw bytes, broken JSON, wrong shapes, wrong field types."""
    rng = random.Random(seed)
    shapes: list[Any] = [None, True, 1e308, -1, "", "x" * 300, [], {}, [1, {"a": None}], {"nested": {}}]
    payloads = []
    for n in range(count):
        kind = n % 4
        if kind == 0:
            payloads.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))))
        elif kind == 1:
            payloads.append(json.dumps({"user_id": "u1", "item_id": "i1"})[: rng.randint(1, 30)].encode())
        elif kind == 2:
            payloads.append(json.dumps(rng.choice(shapes)).encode())
        else:
            event = {"user_id": rng.choice(shapes), "item_id": rng.choice(shapes),
                     "type": rng.choice([*shapes, "view"]), "ts": rng.choice(shapes),
                     "value": rng.choice(shapes)}
            payloads.append(json.dumps(event).encode())
    return payloads


def test_garbage_is_dead_lettered_and_the_worker_keeps_serving(
        settings: Settings, start_worker: Any) -> None:
    names = topic_names(settings)
    worker = start_worker(settings)
    garbage = random_garbage(200, seed=11)
    send(settings, names.events, [(f"g{n}".encode(), raw) for n, raw in enumerate(garbage)])
    send(settings, names.requests, [(b"r", raw) for raw in garbage[:40]])
    total = len(garbage) + 40

    letters = collect(settings, names.dead_letter, lambda r: len(r) >= total, timeout_s=60)
    assert len(letters) == total, worker.log()[-2000:]
    assert all(letter.value["error"] for letter in letters)
    assert worker.process is not None and worker.process.poll() is None, "the worker died"
    answer = request_recommendations(settings, "still-alive", timeout_s=15)
    assert answer["user_id"] == "still-alive"


def test_sigkill_and_restart_with_local_state_keeps_seen_items(
        settings: Settings, start_worker: Any) -> None:
    names = topic_names(settings)
    worker = start_worker(settings)
    items = [f"i{n}" for n in range(8)]
    events = [{"user_id": user, "item_id": item, "type": "purchase", "event_id": f"{user}-{item}",
               "ts": 1_700_000_000_000 + n}
              for n, (user, item) in enumerate((u, i) for i in items for u in ("alice", "bob"))]
    send(settings, names.events, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    wanted = {e["event_id"] for e in events}
    collect(settings, names.recommendations,
            lambda r: wanted <= {v.get("event_id") for v in values(r)}, timeout_s=60)

    worker.kill()
    start_worker(settings, name="restarted")  # same data dir: RocksDB state plus changelog tail
    # A replay of the same events is recognised as duplicates: no new recommendations.
    send(settings, names.events, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events[:4]])
    extra = {"user_id": "alice", "item_id": "i-new", "type": "view", "event_id": "alice-new",
             "ts": 1_700_000_100_000}
    send(settings, names.events, [(b"alice", json.dumps(extra).encode())])
    pushed = collect(settings, names.recommendations,
                     lambda r: any(v.get("event_id") == "alice-new" for v in values(r)), timeout_s=60)
    event_ids = [v.get("event_id") for v in values(pushed, trigger="event")]
    assert sorted(event_ids) == sorted([*wanted, "alice-new"]), "a replayed event was applied twice"
    for user in ("alice", "bob"):
        answer = request_recommendations(settings, user, timeout_s=15)
        assert not {i["item_id"] for i in answer["items"]} & set(items)
