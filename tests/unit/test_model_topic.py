"""Sequence-model snapshots travel the models topic in chunks and are reassembled whole or not at all."""

from __future__ import annotations

import os

import pytest

from streamrec.streams.model_topic import CHUNK_BYTES, MalformedChunk, SnapshotAssembler, snapshot_records


def test_a_large_snapshot_is_split_into_ordered_chunks_and_reassembled() -> None:
    data = os.urandom(2 * CHUNK_BYTES + 123)
    records = snapshot_records("v1", data)
    assembler = SnapshotAssembler()

    assert [key for key, _ in records] == [b"chunk-000000", b"chunk-000001", b"chunk-000002"]
    assert all(len(value) < 1_000_000 for _, value in records)  # under Kafka's default message limit
    assert [assembler.add(value) for _, value in records] == [None, None, ("v1", data)]


def test_an_interrupted_version_is_dropped_and_the_next_complete_one_wins() -> None:
    old = snapshot_records("v1", os.urandom(2 * CHUNK_BYTES))
    new = snapshot_records("v2", b"new weights")
    assembler = SnapshotAssembler()

    assert assembler.add(old[0][1]) is None  # v1's writer died after its first chunk
    assert assembler.add(new[0][1]) == ("v2", b"new weights")
    assert assembler.add(old[1][1]) is None  # a compaction leftover of v1 starts nothing complete


def test_damaged_records_are_refused_with_a_reason() -> None:
    (_, value), = snapshot_records("v1", b"weights")
    header, _, payload = value.partition(b"\n")

    with pytest.raises(MalformedChunk, match="SHA-256"):
        SnapshotAssembler().add(header + b"\n" + b"wrights")
    with pytest.raises(MalformedChunk, match="header line"):
        SnapshotAssembler().add(b"no header")
    with pytest.raises(MalformedChunk, match="bad header"):
        SnapshotAssembler().add(b'{"version": "v1"}\n' + payload)
