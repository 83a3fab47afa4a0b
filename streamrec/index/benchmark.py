"""``streamrec bench index``: build time, memory, latency, recall and freshness of the live index.

Catalogues are synthetic but shaped like learnt embeddings: items cluster around
``sqrt(n)`` directions with Zipf-sized clusters and log-normal norms (popular items
longer), and queries are user-like mixtures of two cluster directions.
"""

from __future__ import annotations

import collections
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from streamrec.index.live_index import IndexConfig, LiveIndex


def synthetic_catalogue(n: int, dim: int, seed: int = 0, queries: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(items, queries)``: ``(n, dim)`` and ``(queries, dim)`` float32 vectors around shared clusters."""
    rng = np.random.default_rng(seed)
    clusters = max(4, int(math.sqrt(n)))
    centres = rng.normal(size=(clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shares = 1.0 / np.arange(1, clusters + 1) ** 0.8  # Zipf-sized clusters
    shares /= shares.sum()
    members = rng.choice(clusters, n, p=shares)
    items = centres[members] + rng.normal(scale=0.5 / math.sqrt(dim), size=(n, dim)) * math.sqrt(dim) / 4
    items *= (rng.lognormal(0.0, 0.3, n) / np.linalg.norm(items, axis=1))[:, None]
    pairs = rng.choice(clusters, (queries, 2), p=shares)
    mix = rng.uniform(0.5, 1.0, (queries, 1))
    users = mix * centres[pairs[:, 0]] + (1 - mix) * centres[pairs[:, 1]] + rng.normal(scale=0.1, size=(queries, dim))
    return items.astype(np.float32), users.astype(np.float32)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "max": ordered[-1]}


def measure_search(index: LiveIndex, queries: np.ndarray, truth: np.ndarray, k: int) -> dict[str, Any]:
    """Single-query latency (µs) and recall@k against exact ids ``truth`` (``(q, k)`` row numbers)."""
    for query in queries[:20]:  # warm-up
        index.search(query, k)
    times, hits = [], 0
    for query, expected in zip(queries, truth, strict=True):
        started = time.perf_counter()
        found = index.search(query, k)
        times.append((time.perf_counter() - started) * 1e6)
        hits += len({int(item_id) for item_id, _ in found} & set(expected.tolist()))
    latency = _percentiles(times)
    return {"search_p50_us": round(latency["p50"], 1), "search_p99_us": round(latency["p99"], 1),
            f"recall@{k}": round(hits / truth.size, 4)}


def measure_snapshot(index: LiveIndex) -> dict[str, Any]:
    """Seconds to save a snapshot and to load it back (what a restarted worker does instead of building)."""
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        path = index.save(Path(directory))
        saved = time.perf_counter()
        loaded = LiveIndex.load(Path(directory), index.config)
        done = time.perf_counter()
        size = sum(file.stat().st_size for file in path.iterdir())
    assert loaded is not None and len(loaded[0]) == len(index)
    return {"snapshot_save_s": round(saved - started, 3), "snapshot_load_s": round(done - saved, 3),
            "snapshot_mb": round(size / 2**20, 1)}


def measure_freshness(index: LiveIndex, dim: int, rate: float, seconds: float, k: int, seed: int) -> dict[str, Any]:
    """Upsert ``rate`` new vectors/s for ``seconds`` from one thread (rebuilding when due, as a
    worker does) while this thread searches for the newest upserted vector until it finds it;
    returns that upsert→found latency in ms (one sample per found item)."""
    rng = np.random.default_rng(seed)
    pending: collections.deque[tuple[str, np.ndarray, float]] = collections.deque()
    done = threading.Event()

    def upsert_steadily() -> None:
        count = int(rate * seconds)
        start = time.perf_counter()
        for j in range(count):
            delay = start + j / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            vector = rng.normal(size=dim).astype(np.float32)
            vector *= 20.0 / np.linalg.norm(vector)  # long: its own best match
            item_id = f"fresh-{j}"
            upserted = time.perf_counter()
            index.upsert(item_id, vector)
            pending.append((item_id, vector, upserted))
            index.maybe_rebuild(background=True)
        done.set()

    writer = threading.Thread(target=upsert_steadily, name="upserts")
    rebuilds_before = index.rebuilds
    writer.start()
    latencies: list[float] = []
    searches = 0
    probe: tuple[str, np.ndarray, float] | None = None
    while not (done.is_set() and not pending and probe is None):
        if probe is None:  # sample the newest upsert: one slow search must not queue the rest behind it
            if not pending:
                time.sleep(0.0005)
                continue
            probe = pending.pop()
            pending.clear()
        item_id, vector, upserted = probe
        searches += 1
        if item_id in {found for found, _ in index.search(vector, k)}:
            latencies.append((time.perf_counter() - upserted) * 1e3)
            probe = None
    writer.join()
    index.wait_for_rebuild()
    fresh = _percentiles(latencies)
    return {"upserts": int(rate * seconds), "sampled": len(latencies), "upsert_rate": rate, "freshness_p50_ms": round(fresh["p50"], 3),
            "freshness_p99_ms": round(fresh["p99"], 3), "freshness_max_ms": round(fresh["max"], 3),
            "rebuilds_during": index.rebuilds - rebuilds_before, "last_rebuild_s": round(index.last_build_s, 2),
            "searches": searches}


def benchmark_index(sizes: list[int], config: IndexConfig, queries: int = 1_000, k: int = 10,
                    freshness_s: float = 10.0, upsert_rate: float = 1_000.0, seed: int = 0,
                    initial_build_threads: int = 1, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every figure of ``streamrec bench index`` for each catalogue size, JSON-ready.

    The first build may use ``initial_build_threads``; rebuilds during the freshness
    run use ``config.build_threads``, as in a worker.
    """
    faiss.omp_set_num_threads(1)  # searches run on one core, as in a worker
    results = []
    for n in sizes:
        items, users = synthetic_catalogue(n, config.dim, seed, queries)
        say(f"{n:,} items: exact ground truth...")
        exact = faiss.IndexFlatIP(config.dim)
        exact.add(items)
        _, truth = exact.search(users, k)
        del exact
        say(f"{n:,} items: building ({config.kind_for(n)})...")
        rss_before = faiss.get_mem_usage_kb()
        started = time.perf_counter()
        index = LiveIndex.from_vectors([str(row) for row in range(n)], items,
                                       replace(config, build_threads=initial_build_threads))
        build_s = time.perf_counter() - started
        index.config = config  # rebuilds from here on: the worker's thread budget
        row = {"items": n, "dim": config.dim, "kind": index.kind, "build_s": round(build_s, 2),
               "index_mb": round(index.memory_bytes() / 2**20, 1),
               "rss_growth_mb": round((faiss.get_mem_usage_kb() - rss_before) / 1024, 1)}
        say(f"{n:,} items: {queries:,} searches...")
        row.update(measure_search(index, users, truth, k))
        row.update(measure_snapshot(index))
        if freshness_s > 0:
            say(f"{n:,} items: freshness under {upsert_rate:,.0f} upserts/s for {freshness_s:g} s...")
            row.update(measure_freshness(index, config.dim, upsert_rate, freshness_s, k, seed))
        results.append(row)
        say(f"{n:,} items: {row}")
        del index, items
    return {"name": "live_index", "k": k, "queries": queries, "config": asdict(config), "faiss": faiss.__version__,
            "numpy": np.__version__, "results": results}
