"""The item path's three codec steps per item, JSON (earlier versions) against binary.

    python docs/bench/micro/item_records.py

A catalogue of 10k items with up to 100 co-visit neighbours each; 300 items change per
round (a vector step and three neighbours each), as between two publications. Steps: the
owner decodes the item updates and encodes the item's state, every replica decodes it.
Prints medians over five rounds in µs per item.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import numpy as np

from streamrec.config import Settings
from streamrec.models.items import ItemDelta, OwnedItem
from streamrec.streams.records import (
    decode_item_state,
    decode_item_updates,
    encode_item_state,
    encode_item_updates,
    item_state_json,
    item_updates_json,
)

ITEMS, CHANGED, ROUNDS = 10_000, 300, 5


def per_item(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return (time.perf_counter() - started) / CHANGED * 1e6


def main() -> None:
    settings = Settings()
    config = settings.model.recommender(settings.events.dedup_window).items
    dim = config.dim
    rng, pick = np.random.default_rng(0), random.Random(0)
    ids = [f"i{n}" for n in range(ITEMS)]
    owned = {}
    for item_id in ids:
        item = OwnedItem(vector=rng.normal(size=dim).astype(np.float32) * 0.1)
        item.apply(item_id, ItemDelta(1.0, 1_000, None, {ids[j]: float(rng.random()) for j in rng.integers(0, ITEMS, 60)}),
                   config)
        owned[item_id] = item
    formats = {"json": (item_updates_json, item_state_json), "binary": (encode_item_updates, encode_item_state)}
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in formats}
    for _ in range(ROUNDS):
        changed = pick.sample(ids, CHANGED)
        deltas = {item_id: ItemDelta(1.0, 2_000, rng.normal(size=dim).astype(np.float32) * 0.01,
                                     {pick.choice(ids): 1.0 for _ in range(3)}) for item_id in changed}
        published = {item_id: owned[item_id].published(config) for item_id in changed}
        for name, (encode_updates, encode_state) in formats.items():
            updates = encode_updates(deltas)
            states = [encode_state(item_id, item) for item_id, item in published.items()]
            steps = {
                "owner: decode updates": lambda: decode_item_updates(updates, dim),  # noqa: B023
                "owner: encode state": lambda: [encode_state(i, item) for i, item in published.items()],  # noqa: B023
                "replica: decode state": lambda: [decode_item_state(raw, dim) for raw in states],  # noqa: B023
            }
            for step, run in steps.items():
                figures[name].setdefault(step, []).append(per_item(run))
    for name, steps in figures.items():
        medians = {step: statistics.median(values) for step, values in steps.items()}
        print(f"{name:6s} " + ", ".join(f"{step} {value:.1f}" for step, value in medians.items())
              + f"; total {sum(medians.values()):.1f} µs per item")


if __name__ == "__main__":
    main()
