"""What the co-visit lists cost: memory per pair on an item's owner and in a replica, time per update.

    python docs/bench/micro/covisit_memory.py

A catalogue of 10k items. Each simulated event adds a co-visit between its item and the
user's previous item (both Zipf-popular, exponent 1.1): the item's owner applies it and
every replica upserts the publication. After a warm-up of 20k events, 60k more are
replayed; tracemalloc (on from each structure's creation, so what an update replaces
counts as freed) reports how much the owners' items and the replica's catalogue grew
per new co-visit pair. The replica's figure includes the items that got their first
follower (one whose id another item's list holds); its pool of followers grows by
doubling, so the figure moves in steps. Then the owner's apply, the replica's upsert and
a five-item ``covisits`` query are timed (medians over five rounds, tracemalloc off).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

import numpy as np

from streamrec.models.items import ItemCatalog, ItemConfig, ItemDelta, OwnedItem
from streamrec.models.online_mf import OnlineMFConfig

ITEMS, WARMUP, MEASURED, ROUNDS, TIMED = 10_000, 20_000, 60_000, 5, 5_000


def events(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``(item, previous item)`` pairs, both Zipf-popular over the catalogue."""
    ranks = rng.zipf(1.1, size=(n, 2)) % ITEMS
    return [(f"item-{a}", f"item-{b}") for a, b in ranks.tolist() if a != b]


def owned_items(config: ItemConfig) -> dict[str, OwnedItem]:
    """Every item of the catalogue as its owner starts it (popularity 1, no neighbours)."""
    owners = {f"item-{i}": OwnedItem() for i in range(ITEMS)}
    for item_id, owned in owners.items():
        owned.apply(item_id, ItemDelta(weight=1.0, ts_ms=1), config)
    return owners


def co_visit(owners: dict[str, OwnedItem], item_id: str, previous: str, config: ItemConfig) -> None:
    owners[item_id].apply(item_id, ItemDelta(weight=1.0, ts_ms=2, neighbours={previous: 1.0}), config)


def main() -> None:
    config = ItemConfig(OnlineMFConfig(dim=32))
    rng = np.random.default_rng(7)
    warmup, measured = events(rng, WARMUP), events(rng, MEASURED)

    tracemalloc.start()
    owners = owned_items(config)
    for item_id, previous in warmup:
        co_visit(owners, item_id, previous, config)
    traced_before = tracemalloc.get_traced_memory()[0]
    for item_id, previous in measured:
        co_visit(owners, item_id, previous, config)
    owner_grown = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()

    owners = owned_items(config)
    publications = {"first": [(item_id, owned.published(config)) for item_id, owned in owners.items()]}
    for phase, pairs in (("warm-up", warmup), ("measured", measured)):
        publications[phase] = []
        for item_id, previous in pairs:
            co_visit(owners, item_id, previous, config)
            publications[phase].append((item_id, owners[item_id].published(config)))
    tracemalloc.start()
    catalog = ItemCatalog(half_life_s=3600.0, dim=32)
    for item_id, published in publications["first"] + publications["warm-up"]:
        catalog.upsert(item_id, published)
    pairs_before, traced_before = catalog.neighbour_pairs, tracemalloc.get_traced_memory()[0]
    for item_id, published in publications["measured"]:
        catalog.upsert(item_id, published)
    replica_grown = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    new_pairs = catalog.neighbour_pairs - pairs_before
    print(f"co-visit pairs {pairs_before:,} -> {catalog.neighbour_pairs:,}; bytes per new pair: "
          f"owner {owner_grown / new_pairs:.0f}, replica {replica_grown / new_pairs:.0f}")

    applies, upserts, queries = [], [], []
    for _ in range(ROUNDS):
        pairs = events(rng, TIMED)
        started = time.perf_counter()
        for item_id, previous in pairs:
            co_visit(owners, item_id, previous, config)
        applies.append((time.perf_counter() - started) / len(pairs) * 1e6)
        batch = [(item_id, owners[item_id].published(config)) for item_id, _ in pairs]
        started = time.perf_counter()
        for item_id, published in batch:
            catalog.upsert(item_id, published)
        upserts.append((time.perf_counter() - started) / len(batch) * 1e6)
        recent = [[item_id for item_id, _ in pairs[i:i + 5]] for i in range(0, len(pairs), 5)]
        started = time.perf_counter()
        for items in recent:
            catalog.covisits(items)
        queries.append((time.perf_counter() - started) / len(recent) * 1e6)
    print(f"owner apply {statistics.median(applies):.1f} us per delta; replica upsert "
          f"{statistics.median(upserts):.1f} us per publication; covisits of 5 items "
          f"{statistics.median(queries):.1f} us (medians of {ROUNDS} rounds)")


if __name__ == "__main__":
    main()
