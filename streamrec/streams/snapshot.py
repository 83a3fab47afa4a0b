"""A worker's local snapshot: its vector index, its item replicas and the topic offsets they reflect.

Every worker replicates two topics in memory (item states and ``streamrec.items``). Re-reading
them from the beginning at start costs time proportional to every record ever written; a
snapshot lets a restarted worker load its replicas and resume both topics at the offsets the
snapshot reflects. Item records carry whole states, so resuming from an older offset than
strictly needed is harmless: re-applying a record gives the same state.

Layout under ``<worker.data_dir>``: ``index/`` (:meth:`LiveIndex.save`, whose ``CURRENT``
rename commits the snapshot) and ``replica.pickle`` (the catalogue as columns, the content
map, availability and categories), written just before it. The index
metadata repeats the replica's offsets; a replica whose offsets differ (a crash between the
two writes) is ignored and the topics are re-read from the beginning. The pickle is this
worker's own file, read only from its own data directory, like its RocksDB tables.

If the Kafka topics are deleted and recreated, delete the worker's data directory too (as
for Faust's tables): offsets past a partition's end restart that partition from its
beginning, but items the snapshot held would stay.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamrec.index.live_index import IndexConfig, LiveIndex
from streamrec.models.content import ContentMap
from streamrec.models.items import CatalogColumns, ItemCatalog

log = logging.getLogger(__name__)

REPLICA_FILE = "replica.pickle"
REPLICA_FORMAT = 1

Offsets = dict[str, dict[int, int]]
"""Topic -> partition -> offset of the next record to apply."""


@dataclass
class ItemReplicas:
    """What a worker knows of every item, rebuilt from the item topics (or loaded from a snapshot)."""

    catalog: ItemCatalog
    content: ContentMap
    """Maps content features to item vectors; learnt from the replicated vectors."""
    unavailable: set[str] = field(default_factory=set)
    categories: dict[str, frozenset[str]] = field(default_factory=dict)
    features: dict[str, dict[int, float]] = field(default_factory=dict)
    """Content features of items announced with content."""
    offsets: Offsets = field(default_factory=dict)


def _json_offsets(offsets: Offsets) -> dict[str, dict[str, int]]:
    return {topic: {str(partition): offset for partition, offset in sorted(by_partition.items())}
            for topic, by_partition in sorted(offsets.items())}


@dataclass
class FrozenReplicas:
    """A copy of :class:`ItemReplicas` that the event loop no longer touches (written in a thread)."""

    catalog: CatalogColumns
    content: ContentMap
    unavailable: set[str]
    categories: dict[str, frozenset[str]]
    features: dict[str, dict[int, float]]
    offsets: dict[str, dict[str, int]]


def freeze(replicas: ItemReplicas) -> FrozenReplicas:
    """Copy the replicas; call it between two applied records (on the event loop), so they match their offsets.

    Mostly array copies (a few hundred ms per 100k items); values of the dicts are replaced, never changed.
    """
    return FrozenReplicas(replicas.catalog.columns(), copy.deepcopy(replicas.content), set(replicas.unavailable),
                          dict(replicas.categories), dict(replicas.features), _json_offsets(replicas.offsets))


def save(data_dir: Path, index: LiveIndex, frozen: FrozenReplicas, metadata: dict[str, Any]) -> None:
    """Write the replicas (atomically), then the index snapshot that commits them (may run in a thread)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".{REPLICA_FILE}.tmp"
    with open(staging, "wb") as out:
        pickle.dump((REPLICA_FORMAT, frozen), out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staging, data_dir / REPLICA_FILE)
    index.save(data_dir / "index", {**metadata, "items": len(index), "replica_offsets": frozen.offsets})


def load(data_dir: Path, config: IndexConfig, catalog: ItemCatalog) -> tuple[LiveIndex | None, ItemReplicas | None]:
    """The index and replicas the last snapshot left (the catalogue restored into the empty ``catalog``).

    ``None`` for what is missing, unreadable or inconsistent; every problem is logged, and the
    worker then starts from an empty index or re-reads the item topics.
    """
    started = time.perf_counter()
    try:
        loaded = LiveIndex.load(data_dir / "index", config)
    except ValueError as exc:
        log.warning("starting with an empty index: %s", exc)
        return None, None
    if loaded is None:
        return None, None
    index, metadata = loaded
    log.info("index snapshot loaded: %d items (%s) in %.2f s, saved at %s", len(index), index.kind,
             time.perf_counter() - started, metadata.get("saved_ms"))
    path = data_dir / REPLICA_FILE
    started = time.perf_counter()
    try:
        with open(path, "rb") as file:
            version, frozen = pickle.load(file)  # noqa: S301 - this worker's own file
    except FileNotFoundError:
        return index, None
    except (OSError, pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, ImportError) as exc:
        log.warning("ignoring the item replica snapshot %s (%r): re-reading the item topics", path, exc)
        return index, None
    if (version != REPLICA_FORMAT or not isinstance(frozen, FrozenReplicas) or frozen.catalog.vectors.shape[1:] != (config.dim,)
            or frozen.offsets != metadata.get("replica_offsets")):
        log.warning("the item replica snapshot %s does not match the index snapshot: re-reading the item topics", path)
        return index, None
    catalog.restore(frozen.catalog)
    offsets = {topic: {int(partition): offset for partition, offset in by_partition.items()}
               for topic, by_partition in frozen.offsets.items()}
    log.info("item replica snapshot loaded: %d items in %.2f s; resuming the item topics %d records in",
             len(catalog), time.perf_counter() - started, sum(sum(by.values()) for by in offsets.values()))
    return index, ItemReplicas(catalog, frozen.content, frozen.unavailable, frozen.categories, frozen.features, offsets)
