"""What the co-visit lists cost a replica: memory per pair and per item, time per publication.

    python docs/bench/micro/covisit_memory.py

A catalogue of 10k items. Each simulated event adds a co-visit between its item and the
user's previous item (both Zipf-popular, exponent 1.1); the item's owner applies it and
every replica upserts the publication. After a warm-up of 20k events, 60k more events are
replayed: tracemalloc reports the bytes the replica's catalogue grew by, per new co-visit
pair (this includes the items that got their first follower: one whose id another item's
list holds). The pool of followers grows by doubling, so the figure moves in steps. Then the replica's upsert and a five-item ``covisits`` query are timed
(medians over five rounds, tracemalloc off).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

import numpy as np

from streamrec.models.items import ItemCatalog, ItemConfig, ItemDelta, OwnedItem, PublishedItem
from streamrec.models.online_mf import OnlineMFConfig

ITEMS, WARMUP, MEASURED, ROUNDS, TIMED = 10_000, 20_000, 60_000, 5, 5_000


def events(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``(item, previous item)`` pairs, both Zipf-popular over the catalogue."""
    ranks = rng.zipf(1.1, size=(n, 2)) % ITEMS
    return [(f"item-{a}", f"item-{b}") for a, b in ranks.tolist() if a != b]


def main() -> None:
    config = ItemConfig(OnlineMFConfig(dim=32))
    owners = {f"item-{i}": OwnedItem() for i in range(ITEMS)}
    rng = np.random.default_rng(7)

    def publications(pairs: list[tuple[str, str]]) -> list[tuple[str, PublishedItem]]:
        out = []
        for item_id, previous in pairs:
            owners[item_id].apply(item_id, ItemDelta(weight=1.0, ts_ms=2, neighbours={previous: 1.0}), config)
            out.append((item_id, owners[item_id].published(config)))
        return out

    first = [(item_id, owned.published(config)) for item_id, owned in owners.items()]
    warmup, measured = publications(events(rng, WARMUP)), publications(events(rng, MEASURED))
    # Traced from the catalogue's creation, so what the upserts replace counts as freed.
    tracemalloc.start()
    catalog = ItemCatalog(half_life_s=3600.0, dim=32)
    for item_id, published in first + warmup:
        catalog.upsert(item_id, published)
    pairs_before, traced_before = catalog.neighbour_pairs, tracemalloc.get_traced_memory()[0]
    for item_id, published in measured:
        catalog.upsert(item_id, published)
    grown = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    new_pairs = catalog.neighbour_pairs - pairs_before
    print(f"co-visit pairs {pairs_before:,} -> {catalog.neighbour_pairs:,}; replica grew {grown / 1e6:.2f} MB, "
          f"{grown / new_pairs:.0f} bytes per new pair (items' first followers included)")

    upserts, queries = [], []
    for _ in range(ROUNDS):
        batch = publications(events(rng, TIMED))
        started = time.perf_counter()
        for item_id, published in batch:
            catalog.upsert(item_id, published)
        upserts.append((time.perf_counter() - started) / len(batch) * 1e6)
        recent = [[item_id for item_id, _ in batch[i:i + 5]] for i in range(0, len(batch), 5)]
        started = time.perf_counter()
        for items in recent:
            catalog.covisits(items)
        queries.append((time.perf_counter() - started) / len(recent) * 1e6)
    print(f"replica upsert {statistics.median(upserts):.1f} us per publication; "
          f"covisits of 5 items {statistics.median(queries):.1f} us (medians of {ROUNDS} rounds)")


if __name__ == "__main__":
    main()
