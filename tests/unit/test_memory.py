"""The worker's memory figures (``streamrec_memory_bytes``) read from real RocksDB and the C heap."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rocksdict

from streamrec.streams.memory import malloc_heap, memory_parts, rocksdb_memory
from streamrec.streams.metrics import WorkerMetrics


def faust_table(*databases: rocksdict.Rdict) -> SimpleNamespace:
    """What ``rocksdb_memory`` reads of a Faust table on the RocksDB store: its partitions' databases."""
    return SimpleNamespace(data=SimpleNamespace(_dbs=dict(enumerate(databases))))


def test_rocksdb_memtables_hold_what_was_written_to_every_partition(tmp_path: Path) -> None:
    databases = [rocksdict.Rdict(str(tmp_path / str(n)), options=rocksdict.Options(raw_mode=True)) for n in range(2)]
    empty = rocksdb_memory([faust_table(*databases)])["rocksdb_memtables"]
    for n, db in enumerate(databases):
        for key in range(2_000 * (n + 1)):
            db[key.to_bytes(4, "big")] = bytes(200)
    written = rocksdb_memory([faust_table(databases[0]), faust_table(databases[1])])
    assert written["rocksdb_memtables"] - empty > 6_000 * 200  # both partitions, both tables counted
    for db in databases:
        db.close()


def test_a_table_on_the_memory_store_counts_nothing() -> None:
    assert set(rocksdb_memory([SimpleNamespace(data={})]).values()) == {0}


def test_the_c_heap_counts_a_large_allocation_while_it_lives() -> None:
    before = malloc_heap()
    if not before:
        pytest.skip("no glibc mallinfo2 here")
    block = np.ones(64 * 2**20, dtype=np.uint8)  # numpy allocates with malloc
    assert malloc_heap()["malloc_in_use"] - before["malloc_in_use"] >= block.nbytes
    del block


def test_the_metrics_endpoint_reports_every_part() -> None:
    metrics = WorkerMetrics()
    metrics.watch_memory(lambda: memory_parts([]))
    text = metrics.render().decode()
    for part in memory_parts([]):
        assert f'streamrec_memory_bytes{{part="{part}"}}' in text
