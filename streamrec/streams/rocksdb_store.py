"""Faust's RocksDB table store with one block cache for the whole worker.

Faust gives every database it opens (one per table partition: 2 tables × 4 partitions
by default, more with standby replicas) its own block cache of ``block_cache_size``,
and keeps each SST file's index and Bloom filter outside any cache. A worker's memory
bound then grows with its partitions (8 × 8 MB of cache by default), and its cache
fills for many minutes as the users table grows, so RSS keeps rising long after
warm-up. Here every database of the process shares one cache of ``block_cache_size``
(``worker.rocksdb_block_cache_mb``), which also holds the index and filter blocks: one
bound on RocksDB's read memory, whatever the partition count.

Writes skip RocksDB's write-ahead log (``worker.rocksdb_wal``, off by default), as Kafka
Streams' state stores do: every write also goes to the table's changelog topic, which is what
recovery replays. A database reopened after a crash holds a prefix of its writes, the
changelog offset it stored among them, so recovery resumes from there and replays the rest.
A clean stop flushes the memtables. Measured: a put costs 3.6 µs with the log, 1.5 µs without.

Selected with the store URL ``streamrec-rocksdb://`` (:data:`STORE_URL`), registered here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import rocksdict
from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb

STORE_URL = "streamrec-rocksdb://"
BLOOM_BITS_PER_KEY = 10
"""Bloom filter bits per key (Faust's default is 3, a false positive in about every fourth
file probed). Measured on a 200k-user table with cold CPU caches, as between a worker's
events (``docs/bench/micro/rocksdb_reads.py``, two runs): reading a new user took 1.9 and
3.5 µs with 3 bits, 1.2 and 1.5 with 10; a known user 5.9 and 9.7 against 5.8 and 8.1
(mostly its data block, which no filter skips). The filters take 1.25 bytes per key, in
the shared block cache."""

_caches: dict[int, rocksdict.Cache] = {}
_lock = threading.Lock()


def shared_cache(size_bytes: int) -> rocksdict.Cache:
    """The process's block cache of ``size_bytes`` (made on first use)."""
    with _lock:
        if size_bytes not in _caches:
            _caches[size_bytes] = rocksdict.Cache(size_bytes)
        return _caches[size_bytes]


class SharedCacheOptions(faust_rocksdb.RocksDBOptions):
    """Faust's options (rocksdict driver) with the shared block cache, holding index and filter blocks
    too; ``write_ahead_log`` False opens databases that skip the log (see the module's docstring)."""

    def __init__(self, *args: Any, write_ahead_log: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("bloom_filter_size", BLOOM_BITS_PER_KEY)
        super().__init__(*args, **kwargs)
        self.write_ahead_log = write_ahead_log

    def open(self, path: Path, *, read_only: bool = False) -> rocksdict.Rdict:
        db = super().open(path, read_only=read_only)
        if not self.write_ahead_log:
            without_log = rocksdict.WriteOptions()
            without_log.disable_wal = True
            db.set_write_options(without_log)
        return db

    @property
    def cache(self) -> rocksdict.Cache:
        """The block cache every database opened with these options uses."""
        return shared_cache(self.block_cache_size)

    def as_options(self) -> rocksdict.Options:
        options = super().as_options()
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)  # the hot ones stay, as before
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store opening its databases with :class:`SharedCacheOptions`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.use_rocksdict:
            raise RuntimeError(f"{STORE_URL} needs the rocksdict driver (pip install rocksdict)")
        self.rocksdb_options = SharedCacheOptions(**self.options, use_rocksdict=True)

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The raw value of ``key`` in ``partition``'s database: one RocksDB read.

        Faust's ``table[key]`` finds the partition in the current event (a task-local) and
        goes through its codec layers and key index on every access: about 10 µs, against
        1 µs for the read. The worker knows each key's partition (its event's).
        """
        return self._db_for_partition(partition).get(key)

    def set_in(self, partition: int, key: bytes, value: bytes) -> None:
        """Write the raw ``value`` of ``key`` into ``partition``'s database (see :meth:`get_in`)."""
        self._key_index[key] = partition  # a read that names no partition (HTTP) goes straight there
        self._db_for_partition(partition).put(key, value)


STORES.aliases.setdefault(STORE_URL.split(":", 1)[0], f"{__name__}:Store")
