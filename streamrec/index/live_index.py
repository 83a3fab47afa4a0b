"""A live FAISS index over string item ids: changes are searchable at once, rebuilds happen aside.

Three parts, searched together and merged by score (inner product, as the model scores):

- **main**: a FAISS index built from a copy of every vector at the last (re)build — exact
  ``IndexFlatIP`` for small catalogues, HNSW (or IVF) for large ones (:class:`IndexConfig`).
  FAISS labels are positions in the id list of that build; main is never modified after it.
- **delta**: the vectors upserted since that build, searched exactly with numpy, so an
  upsert is visible to the next search (freshness is a function call, not a rebuild).
- **tombstones**: main labels whose item was removed or replaced since the build, skipped
  inside the FAISS search through an ``IDSelectorBitmap`` (no over-fetching for them).

When the delta or the tombstones outgrow their limits, :meth:`LiveIndex.maybe_rebuild`
builds a new main in a background thread from a copy of the live vectors and swaps it in
under the lock; changes made while it was building stay in the new delta/tombstones, so
searches never pause and never miss an update. :meth:`LiveIndex.save` / :meth:`LiveIndex.load`
write and read snapshots, so a restarted worker only catches up on recent changes.

>>> index = LiveIndex(IndexConfig(dim=2))
>>> index.upsert("tea", np.array([1.0, 0.0], dtype=np.float32))
>>> index.upsert("cake", np.array([0.0, 1.0], dtype=np.float32))
>>> [item for item, _ in index.search(np.array([1.0, 0.2], dtype=np.float32), 2)]
['tea', 'cake']
>>> index.remove("tea"), len(index)
(True, 1)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamrec.models.kernels import all_finite

# OpenMP threads that finish a parallel region spin while waiting for the next one; on
# a small machine shared with the broker that starved everything (demo latency p50 68 ms
# -> 1 s). Waiting threads sleep instead, and searches (one query each) use one thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import faiss  # noqa: E402 - after the OpenMP setting, which is read when the library loads

faiss.omp_set_num_threads(1)

ItemId = str
Kind = Literal["auto", "flat", "hnsw", "ivf"]

SNAPSHOT_FORMAT = 1
_CURRENT = "CURRENT"


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """How the index is built (``[index]`` in the settings).

    Attributes
    ----------
    dim
        Vector size.
    kind
        ``"flat"`` (exact), ``"hnsw"``, ``"ivf"``, or ``"auto"``: exact up to
        ``flat_max_items`` items, HNSW above (chosen with ``streamrec bench index``).
    flat_max_items
        The size where ``auto`` leaves exact search.
    hnsw_m, hnsw_ef_construction, hnsw_ef_search
        HNSW graph degree, build effort and search effort (recall against speed).
    ivf_lists, ivf_probe
        IVF: clusters (0: about 4·sqrt(n)) and clusters searched per query.
    rebuild_delta_items, rebuild_delta_share
        Rebuild when the delta holds more than ``max(items, share · len(main))`` vectors.
    rebuild_tombstone_share
        Rebuild when more than this share of main's labels are tombstones.
    build_threads
        OpenMP threads FAISS may use while building (searches use one).
    """

    dim: int = 32
    kind: Kind = "auto"
    flat_max_items: int = 20_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 128
    ivf_lists: int = 0
    ivf_probe: int = 16
    rebuild_delta_items: int = 2_000
    rebuild_delta_share: float = 0.02
    rebuild_tombstone_share: float = 0.1
    build_threads: int = 1

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"index dim must be >= 1, got {self.dim}")
        if self.kind not in ("auto", "flat", "hnsw", "ivf"):
            raise ValueError(f"index kind must be auto, flat, hnsw or ivf, got {self.kind!r}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_probe", "build_threads",
                     "rebuild_delta_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"index {name} must be >= 1, got {getattr(self, name)}")

    def kind_for(self, n: int) -> Literal["flat", "hnsw", "ivf"]:
        """The structure used for a main index of ``n`` vectors."""
        if self.kind != "auto":
            return self.kind
        return "flat" if n <= self.flat_max_items else "hnsw"


def build_faiss_index(vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
    """A FAISS inner-product index over ``vectors`` (``(n, d)`` float32), labels ``0..n-1``."""
    n, d = vectors.shape
    kind = config.kind_for(n)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(config.build_threads)  # process-wide: searches meanwhile may use them too
    try:
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = config.hnsw_ef_search
        elif kind == "ivf" and n > 0:
            lists = config.ivf_lists or max(1, min(n // 39, int(4 * math.sqrt(n))))  # >= 39 points per list
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
            sample = vectors if n <= 256 * lists else vectors[np.random.default_rng(0).choice(n, 256 * lists, replace=False)]
            index.train(sample)
            index.nprobe = config.ivf_probe
        else:
            index = faiss.IndexFlatIP(d)
        if n:
            index.add(vectors)
        if isinstance(index, faiss.IndexIVF):
            index.make_direct_map()  # reconstruct(label): rebuilds and unchanged-vector checks need it
    finally:
        faiss.omp_set_num_threads(previous)
    return index


def _search_parameters(index: faiss.Index, selector: faiss.IDSelector, config: IndexConfig) -> faiss.SearchParameters:
    if isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = config.hnsw_ef_search
    elif isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = config.ivf_probe
    else:
        params = faiss.SearchParameters()
    params.sel = selector
    return params


class _Main:
    """One immutable FAISS build plus its (mutable) tombstone bitmap."""

    def __init__(self, index: faiss.Index, ids: list[ItemId], alive: np.ndarray | None, config: IndexConfig) -> None:
        self.index = index
        self.ids = ids
        self.label = {item_id: label for label, item_id in enumerate(ids)}
        self.alive = np.full((len(ids) + 7) // 8, 0xFF, dtype=np.uint8) if alive is None else alive  # bit = live
        dead_labels = np.setdiff1d(np.arange(len(ids)), self.live_labels()).tolist()
        for label in dead_labels:
            del self.label[ids[label]]
        self.dead = len(dead_labels)
        self.selector = faiss.IDSelectorBitmap(len(ids), faiss.swig_ptr(self.alive))  # reads self.alive
        self.params = _search_parameters(index, self.selector, config)

    def is_alive(self, label: int) -> bool:
        return bool(self.alive[label >> 3] >> (label & 7) & 1)

    def kill(self, item_id: ItemId) -> None:
        label = self.label.pop(item_id, None)
        if label is not None:
            self.alive[label >> 3] &= np.uint8(~(1 << (label & 7)) & 0xFF)
            self.dead += 1

    def live_labels(self) -> np.ndarray:
        bits = np.unpackbits(self.alive, bitorder="little")[:len(self.ids)]
        return np.flatnonzero(bits)


class _Delta:
    """Vectors upserted since the last build, searched exactly; each remembers when it was written."""

    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((64, dim), dtype=np.float32)
        self.ids: list[ItemId] = []
        self.seq: list[int] = []
        self.slot: dict[ItemId, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def put(self, item_id: ItemId, vector: np.ndarray, seq: int) -> None:
        slot = self.slot.get(item_id)
        if slot is None:
            slot = self.slot[item_id] = len(self.ids)
            if slot == self.vectors.shape[0]:
                self.vectors = np.concatenate((self.vectors, np.zeros_like(self.vectors)))
            self.ids.append(item_id)
            self.seq.append(seq)
        self.vectors[slot] = vector
        self.seq[slot] = seq

    def drop(self, item_id: ItemId) -> bool:
        slot = self.slot.pop(item_id, None)
        if slot is None:
            return False
        last = len(self.ids) - 1
        if slot != last:  # the last entry fills the hole
            moved = self.ids[last]
            self.vectors[slot], self.ids[slot], self.seq[slot] = self.vectors[last], moved, self.seq[last]
            self.slot[moved] = slot
        self.ids.pop()
        self.seq.pop()
        return True

    def search(self, query: np.ndarray, k: int, exclude: Collection[ItemId]) -> tuple[np.ndarray, np.ndarray]:
        """Scores and slots of the ``k`` best not in ``exclude`` (unordered)."""
        n = len(self.ids)
        if n == 0 or k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.intp)
        scores = self.vectors[:n] @ query
        if exclude:
            scores[[slot for slot in map(self.slot.get, exclude) if slot is not None]] = -np.inf
        slots = np.argpartition(-scores, k)[:k] if k < n else np.arange(n)
        slots = slots[scores[slots] > -np.inf]
        return scores[slots], slots


class LiveIndex:
    """Nearest items by inner product over a changing catalogue; thread-safe (one lock).

    Searches, upserts and removals take the lock briefly; a rebuild builds outside it.
    """

    def __init__(self, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        self._lock = threading.RLock()
        self._main = _Main(build_faiss_index(np.zeros((0, self.config.dim), np.float32), self.config), [], None,
                           self.config)
        self._delta = _Delta(self.config.dim)
        self._version = 0
        self._changed_while_building: set[ItemId] | None = None
        self._builder: threading.Thread | None = None
        self.rebuilds = 0
        self.last_build_s = 0.0

    @classmethod
    def from_vectors(cls, ids: list[ItemId], vectors: np.ndarray, config: IndexConfig) -> LiveIndex:
        """An index built in one go from ``ids`` and their ``(n, d)`` vectors (all in main, no delta)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), config.dim) or len(set(ids)) != len(ids) or not np.isfinite(vectors).all():
            raise ValueError(f"need {len(ids)} distinct ids and as many finite {config.dim}-dimensional vectors, "
                             f"got vectors of shape {vectors.shape}")
        index = cls(config)
        started = time.perf_counter()
        index._main = _Main(build_faiss_index(vectors, config), list(ids), None, config)
        index.last_build_s = time.perf_counter() - started
        return index

    # -- reading --------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:  # an item is in the delta or live in main, never both
            return len(self._main.label) + len(self._delta)

    def __contains__(self, item_id: object) -> bool:
        with self._lock:
            return item_id in self._delta.slot or item_id in self._main.label

    @property
    def version(self) -> int:
        """Counts applied changes (upserts and removals); a snapshot records it."""
        return self._version

    @property
    def delta_items(self) -> int:
        """Items searched exactly outside the FAISS main index (folded in by the next rebuild)."""
        return len(self._delta)

    @property
    def rebuilding(self) -> bool:
        """Whether a rebuild is running."""
        return self._builder is not None

    @property
    def kind(self) -> str:
        """The structure of the current main index: ``flat``, ``hnsw`` or ``ivf``."""
        index = self._main.index
        return "hnsw" if isinstance(index, faiss.IndexHNSW) else "ivf" if isinstance(index, faiss.IndexIVF) else "flat"

    def vector(self, item_id: ItemId) -> np.ndarray | None:
        """The item's current vector (a copy), or ``None``."""
        with self._lock:
            slot = self._delta.slot.get(item_id)
            if slot is not None:
                return self._delta.vectors[slot].copy()
            label = self._main.label.get(item_id)
            return None if label is None else self._main.index.reconstruct(label)

    def search(self, query: np.ndarray, k: int, exclude: Collection[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """The ``k`` items with the largest ``query · vector``, best first, none of ``exclude``.

        ``exclude`` is filtered after the FAISS search, which over-fetches by its size
        (the delta skips them before ranking).
        """
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.config.dim:
            raise ValueError(f"query has {query.shape[0]} dimensions, the index {self.config.dim}")
        if k <= 0:
            return []
        fetch = k + len(exclude)
        with self._lock:
            main, delta = self._main, self._delta
            hits: list[tuple[float, ItemId]] = []
            if main.label:
                scores, labels = main.index.search(query[None, :], min(fetch, len(main.ids)), params=main.params)
                hits = [(score, main.ids[label]) for score, label in zip(scores[0].tolist(), labels[0].tolist(),
                                                                        strict=True) if label >= 0]
            if len(delta):
                scores, slots = delta.search(query, k, exclude)
                hits += [(score, delta.ids[slot]) for score, slot in zip(scores.tolist(), slots.tolist(), strict=True)]
        hits.sort(key=lambda hit: -hit[0])
        return [(item_id, score) for score, item_id in hits if item_id not in exclude][:k]

    def memory_bytes(self) -> int:
        """Approximate bytes held by the vectors, the graph/lists, tombstones and the id maps."""
        with self._lock:
            main, n, d = self._main, len(self._main.ids), self.config.dim
            size = n * d * 4 + main.alive.nbytes + self._delta.vectors.nbytes
            if isinstance(main.index, faiss.IndexHNSW):
                size += main.index.hnsw.neighbors.size() * 4 + main.index.hnsw.levels.size() * 4
            elif isinstance(main.index, faiss.IndexIVF):
                size += n * 8 + main.index.nlist * d * 4
            return size + (n + len(self._delta)) * 120  # id strings and dict entries, roughly

    # -- writing --------------------------------------------------------------------------

    def upsert(self, item_id: ItemId, vector: np.ndarray, changed: bool = False) -> None:
        """Insert or replace an item's vector; searchable when this returns (a no-op if unchanged).

        ``changed`` True says the caller knows the vector differs from the indexed one, which
        skips comparing with it (reading a vector back from FAISS takes about 10 µs).

        Raises
        ------
        ValueError
            The vector has the wrong size or a non-finite component.
        """
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.config.dim or not all_finite(vector):
            raise ValueError(f"item {item_id!r}: need {self.config.dim} finite components, "
                             f"got shape {vector.shape} (finite: {bool(np.isfinite(vector).all())})")
        with self._lock:
            if not changed and self._unchanged(item_id, vector):
                return  # e.g. the item-vector topic re-read after loading a snapshot
            self._version += 1
            self._main.kill(item_id)
            self._delta.put(item_id, vector, self._version)
            if self._changed_while_building is not None:
                self._changed_while_building.add(item_id)

    def _unchanged(self, item_id: ItemId, vector: np.ndarray) -> bool:
        slot = self._delta.slot.get(item_id)
        if slot is not None:
            return np.array_equal(self._delta.vectors[slot], vector)
        label = self._main.label.get(item_id)
        return label is not None and np.array_equal(self._main.index.reconstruct(label), vector)

    def remove(self, item_id: ItemId) -> bool:
        """Forget an item; ``False`` if it was not there."""
        with self._lock:
            found = item_id in self._main.label
            self._main.kill(item_id)
            found = self._delta.drop(item_id) or found
            if found:
                self._version += 1
                if self._changed_while_building is not None:
                    self._changed_while_building.add(item_id)
            return found

    def needs_rebuild(self) -> bool:
        """Whether the delta or the tombstones have outgrown their limits."""
        config, main = self.config, self._main
        delta_limit = max(config.rebuild_delta_items, config.rebuild_delta_share * len(main.ids))
        return len(self._delta) > delta_limit or main.dead > config.rebuild_tombstone_share * max(len(main.ids), 1)

    def maybe_rebuild(self, background: bool = True) -> bool:
        """Start a rebuild if one is due and none is running; ``True`` if started."""
        with self._lock:
            if self._builder is not None or not self.needs_rebuild():
                return False
            return self.rebuild(background)

    def rebuild(self, background: bool = False) -> bool:
        """Build a new main from every live vector and swap it in (``False`` if one is running)."""
        with self._lock:
            if self._builder is not None:
                return False
            main, delta = self._main, self._delta
            labels = main.live_labels()
            ids = [main.ids[label] for label in labels.tolist()] + list(delta.ids)
            delta_vectors = delta.vectors[:len(delta)].copy()
            self._changed_while_building = set()
            self._builder = threading.Thread(target=self._build, args=(main.index, labels, ids, delta_vectors,
                                                                       background),
                                             name="index-rebuild", daemon=True)
        if background:
            self._builder.start()
        else:
            self._builder.run()
        return True

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        """Block until no rebuild is running, including one chained after the last."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (builder := self._builder) is not None and builder.is_alive():
            builder.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _build(self, old: faiss.Index, labels: np.ndarray, ids: list[ItemId], delta_vectors: np.ndarray,
               chain: bool) -> None:
        started = time.perf_counter()
        swapped = False
        try:
            kept = old.reconstruct_batch(labels) if labels.size else np.zeros((0, self.config.dim), np.float32)
            index = build_faiss_index(np.concatenate((kept, delta_vectors)), self.config)
            with self._lock:
                changed = self._changed_while_building or set()
                main = _Main(index, ids, None, self.config)
                delta = _Delta(self.config.dim)
                for item_id in changed:  # written after the copy: the newer vector (if any) stays in the delta
                    main.kill(item_id)
                    slot = self._delta.slot.get(item_id)
                    if slot is not None:
                        delta.put(item_id, self._delta.vectors[slot], self._delta.seq[slot])
                self._main, self._delta = main, delta
                self.rebuilds += 1
                self.last_build_s = time.perf_counter() - started
                swapped = True
        finally:
            with self._lock:
                self._changed_while_building = None
                self._builder = None
                if chain and swapped:  # what changed during a long build may already be due: upserts may have stopped
                    self.maybe_rebuild(background=True)

    # -- snapshots ------------------------------------------------------------------------

    def save(self, directory: Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write a snapshot under ``directory`` (atomically: a reader sees the old or the new one).

        ``metadata`` (JSON) is stored with it, e.g. the topic offsets it reflects.
        Returns the snapshot's own directory.
        """
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:  # copy what changes; main's FAISS index and id list never do
            main, delta = self._main, self._delta
            state = {"format": SNAPSHOT_FORMAT, "version": self._version, "config": asdict(self.config),
                     "main_ids": main.ids, "delta_ids": list(delta.ids), "metadata": metadata or {}}
            alive, vectors = main.alive.copy(), delta.vectors[:len(delta)].copy()
        name = f"snapshot-{state['version']:012d}-{time.time_ns()}"
        target = directory / name
        staging = directory / f".{name}.tmp"
        staging.mkdir()
        faiss.write_index(main.index, str(staging / "main.faiss"))
        np.savez(staging / "arrays.npz", alive=alive, delta_vectors=vectors)
        (staging / "state.json").write_text(json.dumps(state))
        staging.rename(target)
        pointer = directory / f".{_CURRENT}.tmp"
        pointer.write_text(name)
        os.replace(pointer, directory / _CURRENT)  # the switch is this one atomic rename
        for old in directory.glob("snapshot-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return target

    @classmethod
    def load(cls, directory: Path, config: IndexConfig) -> tuple[LiveIndex, dict[str, Any]] | None:
        """The latest snapshot under ``directory`` and its metadata; ``None`` if there is none.

        Raises
        ------
        ValueError
            The snapshot is unreadable or was written for another vector size.
        """
        pointer = directory / _CURRENT
        if not pointer.exists():
            return None
        path = directory / pointer.read_text().strip()
        try:
            state = json.loads((path / "state.json").read_text())
            arrays = np.load(path / "arrays.npz")
            index = faiss.read_index(str(path / "main.faiss"))
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"index snapshot {path} is unreadable ({exc}); delete it to rebuild from the topic") from exc
        if state.get("format") != SNAPSHOT_FORMAT or index.d != config.dim:
            raise ValueError(f"index snapshot {path} holds {index.d}-dimensional vectors (format "
                             f"{state.get('format')}), expected {config.dim} (format {SNAPSHOT_FORMAT}); "
                             "delete it to rebuild from the topic")
        live = cls(config)
        live._main = _Main(index, list(state["main_ids"]), arrays["alive"].copy(), config)
        for item_id, vector in zip(state["delta_ids"], arrays["delta_vectors"], strict=True):
            live._delta.put(item_id, vector, 0)
        live._version = int(state["version"])
        return live, dict(state.get("metadata") or {})
