"""The worker's live index: queries go through it, and a clean stop leaves a snapshot the next start loads."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from streamrec.config import Settings, with_section
from streamrec.load.request import request_recommendations
from tests.harness import collect, metric, send, topic_names, values

pytestmark = pytest.mark.integration


def test_queries_use_the_index_and_a_restart_loads_its_snapshot(settings: Settings, start_worker: Any) -> None:
    settings = with_section(settings, "model", index_min_items=0)  # every query through the index
    names = topic_names(settings)
    worker = start_worker(settings)
    items = [f"i{n}" for n in range(12)]
    histories = {"alice": items[:6], "bob": items[6:], "carol": items}
    events = [{"user_id": user, "item_id": item, "type": "purchase", "event_id": f"{user}-{item}",
               "ts": 1_700_000_000_000 + n}
              for user, seen in histories.items() for n, item in enumerate(seen)]
    send(settings, names.events, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    wanted = {e["event_id"] for e in events}
    collect(settings, names.recommendations, lambda r: wanted <= {v.get("event_id") for v in values(r)},
            timeout_s=60)
    deadline = time.monotonic() + 30
    offered: set[str] = set()
    while not offered and time.monotonic() < deadline:  # bob's items reach the replica a moment later
        offered = {item["item_id"] for item in request_recommendations(settings, "alice", timeout_s=15)["items"]}
    assert offered and offered <= set(items[6:]), (offered, worker.log()[-2000:])  # unseen ones only
    while metric(settings, "streamrec_index_items") < len(items) and time.monotonic() < deadline:
        time.sleep(0.1)  # every item's state replicated (on a loaded machine the last ones come later)

    worker.stop()  # clean: writes the snapshot
    assert (settings.worker.data_dir / "index" / "CURRENT").exists(), worker.log()[-2000:]
    restarted = start_worker(settings, name="restarted")

    assert "index snapshot loaded: 12 items" in restarted.log(), restarted.log()[-2000:]
    assert "item replica snapshot loaded: 12 items" in restarted.log(), restarted.log()[-2000:]
    answer = request_recommendations(settings, "dave", timeout_s=15)  # a new user: trending, via the index
    assert {item["item_id"] for item in answer["items"]} <= set(items) and answer["items"]
