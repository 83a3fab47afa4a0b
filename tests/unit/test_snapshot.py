"""A worker's local snapshot: index and item replicas saved together, loaded only when they match."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from streamrec.index.live_index import IndexConfig, LiveIndex
from streamrec.models.content import ContentMap
from streamrec.models.items import ItemCatalog, ItemConfig, OwnedItem
from streamrec.models.online_mf import OnlineMFConfig
from streamrec.streams import snapshot
from streamrec.streams.snapshot import REPLICA_FILE, ItemReplicas

DIM = 8


def replicas_and_index() -> tuple[ItemReplicas, LiveIndex]:
    rng = np.random.default_rng(0)
    config = ItemConfig(mf=OnlineMFConfig(dim=DIM))
    catalog = ItemCatalog(3600.0, DIM)
    index = LiveIndex(IndexConfig(dim=DIM))
    for n in range(30):
        vector = rng.normal(size=DIM).astype(np.float32)
        neighbours = {f"i{n - 1}": 2.0} if n else {}
        catalog.upsert(f"i{n}", OwnedItem(float(n), 1_000 + n, vector, neighbours).published(config))
        index.upsert(f"i{n}", vector)
    catalog.expose(catalog.rows(["i0", "i7", "i0"]))
    replicas = ItemReplicas(catalog, ContentMap(DIM), {"i3"}, {"i1": frozenset({"a"})}, {"i1": {7: 1.0}},
                            {"item-state": {0: 30, 1: 12}, "items": {0: 2}})
    return replicas, index


def test_a_saved_snapshot_loads_with_its_replicas_and_offsets(tmp_path: Path) -> None:
    replicas, index = replicas_and_index()
    snapshot.save(tmp_path, index, snapshot.freeze(replicas), {"saved_ms": 1})

    loaded_index, loaded = snapshot.load(tmp_path, IndexConfig(dim=DIM), ItemCatalog(3600.0, DIM))

    assert loaded_index is not None and len(loaded_index) == 30
    assert loaded is not None and loaded.offsets == replicas.offsets
    assert (loaded.unavailable, loaded.categories, loaded.features) == ({"i3"}, {"i1": frozenset({"a"})}, {"i1": {7: 1.0}})
    for n in range(30):
        np.testing.assert_array_equal(loaded.catalog.vector(f"i{n}"), replicas.catalog.vector(f"i{n}"))
    for n in range(30):
        assert loaded.catalog.neighbours(f"i{n}") == replicas.catalog.neighbours(f"i{n}")
        assert loaded.catalog.score(f"i{n}") == replicas.catalog.score(f"i{n}")
    assert loaded.catalog.exposures(loaded.catalog.rows(["i0", "i7", "i8"])).tolist() == [2, 1, 0]


def test_replicas_that_do_not_match_the_index_snapshot_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    replicas, index = replicas_and_index()
    snapshot.save(tmp_path, index, snapshot.freeze(replicas), {})
    replicas.offsets["items"][0] = 3  # a later replica file, but the index snapshot of the earlier save
    snapshot.save(tmp_path / "later", index, snapshot.freeze(replicas), {})
    (tmp_path / "later" / REPLICA_FILE).replace(tmp_path / REPLICA_FILE)

    with caplog.at_level(logging.WARNING):
        loaded_index, loaded = snapshot.load(tmp_path, IndexConfig(dim=DIM), ItemCatalog(3600.0, DIM))

    assert loaded_index is not None and loaded is None
    assert "does not match the index snapshot" in caplog.text


def test_an_unreadable_replica_file_is_ignored_and_a_missing_snapshot_is_none(tmp_path: Path) -> None:
    assert snapshot.load(tmp_path, IndexConfig(dim=DIM), ItemCatalog(3600.0, DIM)) == (None, None)
    replicas, index = replicas_and_index()
    snapshot.save(tmp_path, index, snapshot.freeze(replicas), {})
    (tmp_path / REPLICA_FILE).write_bytes(b"not a pickle")

    loaded_index, loaded = snapshot.load(tmp_path, IndexConfig(dim=DIM), ItemCatalog(3600.0, DIM))

    assert loaded_index is not None and loaded is None
