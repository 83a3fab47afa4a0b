"""Where a worker's memory goes: RocksDB's memtables, caches and table readers, the C heap, and
RSS split into anonymous memory and pages of mapped files.

RSS alone cannot tell a cache filling up to its bound from state that grows without one;
these figures (``streamrec_memory_bytes``) can, and the soak benchmark reports them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from streamrec.streams.rocksdb_store import SharedCacheOptions

#: RocksDB properties summed over every open table partition, by the name reported.
ROCKSDB_PROPERTIES = {
    "rocksdb_memtables": "rocksdb.cur-size-all-mem-tables",
    "rocksdb_block_cache": "rocksdb.block-cache-usage",
    "rocksdb_table_readers": "rocksdb.estimate-table-readers-mem",
}


def rocksdb_memory(tables: Iterable[Any]) -> dict[str, int]:
    """Bytes of each of :data:`ROCKSDB_PROPERTIES`, summed over the tables' open partitions
    (a block cache they share, see :mod:`~streamrec.streams.rocksdb_store`, counted once).

    Tables on another store (``memory://`` in unit tests) count nothing.
    """
    totals = dict.fromkeys(ROCKSDB_PROPERTIES, 0)
    shared: dict[int, Any] = {}
    for table in tables:
        databases = getattr(table.data, "_dbs", {})  # Faust's RocksDB store: one DB per partition
        for db in list(databases.values()):
            for name, prop in ROCKSDB_PROPERTIES.items():
                totals[name] += db.property_int_value(prop) or 0
        options = getattr(table.data, "rocksdb_options", None)
        if databases and isinstance(options, SharedCacheOptions):
            shared[options.block_cache_size] = options.cache
    if shared:  # every database reports the one cache they share: count it once
        totals["rocksdb_block_cache"] = sum(cache.get_usage() for cache in shared.values())
    return totals


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _libc() -> ctypes.CDLL | None:
    path = ctypes.util.find_library("c")
    return ctypes.CDLL(path) if path else None


def _mallinfo2() -> Callable[[], _Mallinfo2] | None:
    function = getattr(_LIBC, "mallinfo2", None)  # glibc 2.33 and newer
    if function is None:
        return None
    function.restype = _Mallinfo2
    return function


_LIBC = _libc()
_MALLINFO2 = _mallinfo2()
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)  # glibc only
_MALLOPT = getattr(_LIBC, "mallopt", None)
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_M_ARENA_MAX = -8


def malloc_heap() -> dict[str, int]:
    """Bytes the C allocator has handed out (``malloc_in_use``) and holds free (``malloc_free``).

    Python objects, RocksDB, FAISS and numpy all allocate here, so a growing ``malloc_free``
    is fragmentation, not state. Empty where glibc's ``mallinfo2`` is missing (musl, macOS).
    """
    if _MALLINFO2 is None:
        return {}
    info = _MALLINFO2()
    return {"malloc_in_use": info.uordblks + info.hblkhd, "malloc_free": info.fordblks}


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the operating system (glibc's ``malloc_trim``).

    glibc returns freed memory only from the top of each heap, so the holes that a
    worker's churn of short-lived buffers (fetched records, RocksDB blocks, numpy
    temporaries) leaves inside count in RSS until trimmed: in a 10-minute soak they grew
    ``malloc_free`` by 14 MB. False where there is no ``malloc_trim`` (musl, macOS).
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's heaps ("arenas") at ``arenas`` for the threads started from now on.

    glibc gives threads heaps of their own, up to 8 per core, and each fragments on its own:
    a worker's Kafka consumer thread, its index builds and RocksDB's threads churn buffers in
    theirs, which a trim cannot fully give back. False where there is no ``mallopt`` (musl,
    macOS) or ``arenas`` is 0 (glibc's default).
    """
    if _MALLOPT is None or arenas <= 0:
        return False
    return bool(_MALLOPT(_M_ARENA_MAX, arenas))


def fix_mmap_threshold(kib: int) -> bool:
    """Give every allocation of ``kib`` KiB or more its own mapping, from now on.

    glibc starts at 128 KiB but raises this threshold to the size of each mapped block that
    is freed (up to 32 MiB). After that, a worker's large short-lived buffers (fetched record
    batches, numpy temporaries) come from the heap instead and leave holes in it when freed.
    A threshold set here stays put: glibc stops adjusting it. Measured
    in a 10-minute soak: heap free space 3 -> 5 MB instead of 13 -> 23 MB, and the worker's
    RSS 70 MB lower. False where there is no ``mallopt`` (musl, macOS) or ``kib`` is 0
    (glibc's dynamic threshold).
    """
    if _MALLOPT is None or kib <= 0:
        return False
    return bool(_MALLOPT(_M_MMAP_THRESHOLD, kib * 1024))


#: Lines of ``/proc/self/status`` that split RSS, by the name reported.
RSS_PARTS = {"rss_anon": "RssAnon:", "rss_file": "RssFile:"}


def rss_split(status: Path = Path("/proc/self/status")) -> dict[str, int]:
    """RSS in anonymous memory (heaps, arenas, mappings: what state and leaks grow) and in
    pages of mapped files (libraries' code and data, counted as first touched: it grows a
    little as new code paths run, which is no leak). Empty where there is no ``/proc`` (macOS)."""
    try:
        lines = status.read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        for name, prefix in RSS_PARTS.items():
            if line.startswith(prefix):
                found[name] = int(line.split()[1]) * 1024  # "RssAnon:   123456 kB"
    return found


def memory_parts(tables: Iterable[Any]) -> dict[str, int]:
    """Every figure of this module, by name: RocksDB's parts, the C heap's, then RSS's split."""
    return {**rocksdb_memory(tables), **malloc_heap(), **rss_split()}
