"""Faust's in-memory table store, with the partition-addressed reads and writes of the worker's
RocksDB store (:class:`~streamrec.streams.rocksdb_store.Store`), for unit tests.

Selected with the store URL ``streamrec-memory://`` (:data:`STORE_URL`), registered here.
"""

from __future__ import annotations

from faust.stores import STORES
from faust.stores import memory as faust_memory

STORE_URL = "streamrec-memory://"


class Store(faust_memory.Store):
    """One dictionary for every partition, as Faust's; ``partition`` is only recorded."""

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` (see :meth:`streamrec.streams.rocksdb_store.Store.get_in`)."""
        return self.data.get(key)

    def set_in(self, partition: int, key: bytes, value: bytes) -> None:
        """Write ``value`` for ``key``, recorded as ``partition``'s (see :meth:`get_in`)."""
        self._key_partition[key] = partition
        self.data[key] = value


STORES.aliases.setdefault(STORE_URL.split(":", 1)[0], f"{__name__}:Store")
