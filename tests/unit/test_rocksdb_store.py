"""The worker's RocksDB store: one block cache for every table partition of the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamrec.config import Settings, with_section
from streamrec.streams.app import create_app
from streamrec.streams.memory import rocksdb_memory
from streamrec.streams.rocksdb_store import BLOOM_BITS_PER_KEY, SharedCacheOptions, Store

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
        assert table.data.rocksdb_options.write_ahead_log is settings.worker.rocksdb_wal is False
        assert table.data.rocksdb_options.bloom_filter_size == BLOOM_BITS_PER_KEY  # not Faust's 3


def log_bytes(path: Path) -> int:
    """Bytes in the database's write-ahead log files."""
    return sum(f.stat().st_size for f in path.glob("*.log"))


@pytest.mark.parametrize("logged", [True, False])
def test_without_the_log_writes_stay_out_of_it_and_a_clean_close_keeps_them(tmp_path: Path, logged: bool) -> None:
    options = SharedCacheOptions(block_cache_size=MB, use_rocksdict=True, write_ahead_log=logged)
    db = options.open(tmp_path)
    for key in range(1_000):
        db[key.to_bytes(4, "big")] = bytes(100)
    assert (log_bytes(tmp_path) > 100_000) is logged
    db.close()
    db = options.open(tmp_path)
    assert db[(999).to_bytes(4, "big")] == bytes(100)  # the memtable was flushed on close
    db.close()


CRASH = """
import os, sys
from pathlib import Path
from streamrec.streams.rocksdb_store import SharedCacheOptions
db = SharedCacheOptions(block_cache_size=2**20, use_rocksdict=True, write_ahead_log=False).open(Path(sys.argv[1]))
for key in range(100):
    db[key.to_bytes(4, "big")] = b"flushed"
db.flush()
for key in range(100, 200):
    db[key.to_bytes(4, "big")] = b"in the memtable"
os._exit(9)  # a crash: no close, no flush
"""


def test_after_a_crash_without_the_log_the_database_holds_a_prefix_of_its_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", CRASH, str(tmp_path)], check=False, timeout=60)
    db = SharedCacheOptions(block_cache_size=MB, use_rocksdict=True).open(tmp_path)
    assert all(db[key.to_bytes(4, "big")] == b"flushed" for key in range(100))
    assert (100).to_bytes(4, "big") not in db  # lost with the memtable: recovery replays it from the changelog
    db.close()
