"""The worker's RocksDB store: one block cache for every table partition of the process."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from streamrec.config import Settings, with_section
from streamrec.streams.app import create_app
from streamrec.streams.memory import rocksdb_memory
from streamrec.streams.rocksdb_store import SharedCacheOptions, Store

MB = 2**20


def test_databases_opened_with_the_options_share_one_block_cache(tmp_path: Path) -> None:
    options = SharedCacheOptions(block_cache_size=3 * MB, use_rocksdict=True)
    read, idle = options.open(tmp_path / "read"), options.open(tmp_path / "idle")
    for key in range(20_000):
        read[key.to_bytes(4, "big")] = bytes(100)
    read.flush()  # to an SST file, so reads go through the block cache
    for key in range(0, 20_000, 7):
        assert read[key.to_bytes(4, "big")] == bytes(100)

    used = options.cache.get_usage()
    assert used > 100_000
    # The database never read from reports the same cache: there is only one.
    assert idle.property_int_value("rocksdb.block-cache-usage") == used
    tables = [SimpleNamespace(data=SimpleNamespace(_dbs={0: read, 1: idle}, rocksdb_options=options))]
    assert rocksdb_memory(tables)["rocksdb_block_cache"] == used  # counted once, not per database
    read.close()
    idle.close()


def test_a_worker_keeps_its_tables_on_the_shared_cache_store(tmp_path: Path) -> None:
    settings = with_section(Settings(), "worker", data_dir=tmp_path)
    app = create_app(settings)

    for table in (app.pipeline.users, app.pipeline.items):
        assert isinstance(table.data, Store)
        assert isinstance(table.data.rocksdb_options, SharedCacheOptions)
        assert table.data.rocksdb_options.block_cache_size == settings.worker.rocksdb_block_cache_mb * MB
