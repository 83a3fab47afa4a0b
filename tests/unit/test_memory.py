"""The worker's memory figures (``streamrec_memory_bytes``) read from real RocksDB and the C heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import rocksdict

from streamrec.streams.memory import malloc_heap, memory_parts, release_free_heap, rocksdb_memory, rss_split
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


def test_rss_splits_into_anonymous_memory_and_file_pages_that_add_up_to_it() -> None:
    split = rss_split()
    if not split:
        pytest.skip("no /proc here")
    block = np.ones(64 * 2**20, dtype=np.uint8)  # touched anonymous memory
    grown = rss_split()
    assert grown["rss_anon"] - split["rss_anon"] >= block.nbytes * 0.9
    rss = psutil.Process().memory_info().rss
    assert abs(grown["rss_anon"] + grown["rss_file"] - rss) < 0.05 * rss  # (shared memory is the rest)
    del block


def test_rss_split_is_empty_without_proc(tmp_path: Path) -> None:
    assert rss_split(tmp_path / "missing") == {}


def test_the_metrics_endpoint_reports_every_part() -> None:
    metrics = WorkerMetrics()
    metrics.watch_memory(lambda: memory_parts([]))
    text = metrics.render().decode()
    for part in memory_parts([]):
        assert f'streamrec_memory_bytes{{part="{part}"}}' in text


def test_trimming_gives_the_free_holes_inside_the_heap_back() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not malloc_heap() or not hasattr(libc, "malloc_trim"):
        pytest.skip("no glibc here")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 60 MB in blocks below the mmap threshold, all touched; then all freed but the last,
    # which pins the top of the heap so free() cannot shrink it by itself.
    blocks = [libc.malloc(100_000) for _ in range(600)]
    for block in blocks:
        ctypes.memset(block, 1, 100_000)
    for block in blocks[:-1]:
        libc.free(block)
    before = psutil.Process().memory_info().rss
    assert release_free_heap()
    assert before - psutil.Process().memory_info().rss > 30 * 2**20
    libc.free(blocks[-1])


ARENAS_SCRIPT = """
import ctypes, sys, threading
from streamrec.streams.memory import limit_malloc_arenas
limit_malloc_arenas(int(sys.argv[1]))
ready = threading.Barrier(6)
def churn():
    ready.wait()  # all at once, so glibc hands out heaps to threads that find the others busy
    kept = [bytearray(4096) for _ in range(20_000)]
threads = [threading.Thread(target=churn) for _ in range(6)]
for thread in threads: thread.start()
for thread in threads: thread.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena n:" paragraph per heap, on stderr
"""


@pytest.mark.skipif(malloc_heap() == {}, reason="glibc only")
@pytest.mark.parametrize("arenas", [1, 2])
def test_threads_share_at_most_the_configured_number_of_heaps(arenas: int) -> None:
    def heaps(limit: int) -> int:
        done = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, str(limit)], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONMALLOC": "malloc"})
        return done.stderr.count("Arena ")

    assert heaps(0) > arenas  # glibc's default gives busy threads heaps of their own
    assert heaps(arenas) <= arenas


def _mapped_blocks_after_a_large_free(threshold_kib: int) -> int:
    """Bytes glibc holds in separate mappings once a 1 MiB block is allocated after a 4 MiB one was freed."""
    script = """
import ctypes, sys
from streamrec.streams.memory import _MALLINFO2, fix_mmap_threshold
fix_mmap_threshold(int(sys.argv[1]))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))  # freeing a mapped 4 MiB block raises glibc's dynamic threshold past it
before = _MALLINFO2().hblkhd
block = libc.malloc(1 << 20)
print(_MALLINFO2().hblkhd - before)
"""
    done = subprocess.run([sys.executable, "-c", script, str(threshold_kib)], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(malloc_heap() == {}, reason="glibc only")
def test_a_fixed_mmap_threshold_keeps_large_blocks_off_the_heap_after_a_larger_one_is_freed() -> None:
    assert _mapped_blocks_after_a_large_free(0) == 0  # glibc's dynamic threshold: on the heap
    assert _mapped_blocks_after_a_large_free(128) >= 1 << 20  # its own mapping, returned when freed
