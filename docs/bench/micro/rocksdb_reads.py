"""A user-state read from RocksDB with Faust's Bloom filters (3 bits per key) against the worker's (10).

    python docs/bench/micro/rocksdb_reads.py

A table of 200k users (150-600 byte states) opened with the worker's options
(``streams/rocksdb_store.py``); reads of 60 known or 60 new users at a time, with the CPU
caches flushed in between as a worker's other work between events does. Prints medians
over four rounds in µs per read.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from streamrec.streams.rocksdb_store import SharedCacheOptions

USERS, READS, BATCH = 200_000, 3_000, 60
MB = 2**20


def read_cost(bloom_bits: int, workdir: Path) -> dict[str, float]:
    options = SharedCacheOptions(write_buffer_size=4 * MB, max_write_buffer_number=2, block_cache_size=8 * MB,
                                 write_ahead_log=False, use_rocksdict=True, bloom_filter_size=bloom_bits)
    db = options.open(workdir / f"bloom{bloom_bits}")
    pick = random.Random(1)
    values = [os.urandom(pick.randint(150, 600)) for _ in range(1_000)]
    keys = [f"u{n}".encode() for n in range(2 * USERS)]
    for n, key in enumerate(keys[:USERS]):
        db.put(key, values[n % len(values)])
    other_work = np.zeros(2 * MB)  # 16 MB, written between batches to flush the CPU caches
    figures: dict[str, list[float]] = {"known user": [], "new user": []}
    for _ in range(4):
        for kind, pool in (("known user", keys[:USERS]), ("new user", keys[USERS:])):
            sample, spent = pick.sample(pool, READS), 0.0
            for start in range(0, READS, BATCH):
                other_work[::8] += 1.0
                started = time.perf_counter()
                for key in sample[start:start + BATCH]:
                    db.get(key)
                spent += time.perf_counter() - started
            figures[kind].append(spent / READS * 1e6)
    db.close()
    return {kind: statistics.median(values) for kind, values in figures.items()}


def main() -> None:
    workdir = Path(tempfile.mkdtemp())
    try:
        for bits in (3, 10):
            costs = read_cost(bits, workdir)
            print(f"{bits:2d} bits per key: " + ", ".join(f"{kind} {value:.1f} µs" for kind, value in costs.items()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
