"""An item announced with content on streamrec.items reaches the users whose taste it matches before any event."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from streamrec.config import Settings
from streamrec.load.request import request_recommendations
from tests.harness import collect, metric, send, topic_names, values

pytestmark = pytest.mark.integration


def test_announced_items_go_first_to_the_fans_of_their_genre(settings: Settings, start_worker: Any) -> None:
    names = topic_names(settings)
    catalogue = {f"{genre}{n}": genre for genre in ("jazz", "punk") for n in range(20)}
    send(settings, names.items, [(item.encode(), json.dumps({"item_id": item, "categories": [genre],
                                                             "title": f"{genre} record {n}"}).encode())
                                 for n, (item, genre) in enumerate(catalogue.items())])
    start_worker(settings)
    rng = random.Random(0)
    fans = {f"{genre}-fan{n}": genre for genre in ("jazz", "punk") for n in range(8)}
    events = []
    for n in range(1_280):
        fan = rng.choice(sorted(fans))
        item = f"{fans[fan]}{rng.randrange(20)}"
        events.append({"user_id": fan, "item_id": item, "type": "purchase", "event_id": f"e{n}",
                       "ts": 1_700_000_000_000 + n})
    send(settings, names.events, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    collect(settings, names.recommendations, lambda r: len(values(r, trigger="event")) >= 1_280, timeout_s=90)
    wait_for_item_vectors_to_settle(settings)  # they teach the content map the new items start from

    send(settings, names.items, [(f"new-{genre}".encode(), json.dumps(
        {"item_id": f"new-{genre}", "categories": [genre], "title": f"new {genre} record"}).encode())
        for genre in ("jazz", "punk")])

    def ranks(user: str) -> dict[str, int]:
        listed = [item["item_id"] for item in request_recommendations(settings, user, k=45)["items"]]
        return {item: listed.index(item) for item in ("new-jazz", "new-punk") if item in listed}

    deadline = time.monotonic() + 30
    seen: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline and len(seen) < len(fans):
        for fan in fans:
            got = ranks(fan)
            if len(got) == 2:
                seen[fan] = got
    assert len(seen) == len(fans), seen
    seen = {fan: ranks(fan) for fan in fans}  # once more, with every fan's state settled
    # Every fan: the new record of their genre among their first five, ahead of the other one.
    misplaced = {fan: seen[fan] for fan, genre in fans.items()
                 if not seen[fan][f"new-{genre}"] < min(5, seen[fan][f"new-{'punk' if genre == 'jazz' else 'jazz'}"])}
    assert not misplaced, seen


def wait_for_item_vectors_to_settle(settings: Settings, quiet_s: float = 1.5, timeout_s: float = 30.0) -> None:
    """Wait until the worker's replica has applied no item-state record for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    applied, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        now = metric(settings, "streamrec_item_freshness_seconds_count")
        if now != applied:
            applied, since = now, time.monotonic()
        elif applied > 0 and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.25)
    raise AssertionError(f"item vectors still changing after {timeout_s} s ({applied:.0f} applied)")
