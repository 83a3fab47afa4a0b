"""Sequence-model snapshots on a Kafka topic, in chunks.

The trainer publishes each snapshot to the internal, compacted, one-partition
models topic as consecutive records keyed ``chunk-000000``, ``chunk-000001``...
Each value is one JSON header line (version, chunk index and count, total size and
SHA-256 of the whole snapshot) followed by up to :data:`CHUNK_BYTES` of it.
Every worker reads the topic from the beginning (like the item state) and feeds
the records to a :class:`SnapshotAssembler`, which hands back a snapshot's bytes once
all of its chunks have arrived and their digest matches.

Keys repeat across versions, so compaction keeps the newest version's chunks (older
leftovers with higher indices carry the old version and are ignored). One partition
keeps a version's chunks in order; chunks stay well under Kafka's default 1 MB limit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

CHUNK_BYTES = 512 * 1024


class MalformedChunk(ValueError):
    """A models-topic record that is not a snapshot chunk."""


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """Which snapshot a chunk belongs to, and where it goes."""

    version: str
    index: int
    count: int
    size: int
    sha256: str


def snapshot_records(version: str, data: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(key, value)`` records that carry snapshot ``data`` as ``version``."""
    count = max(1, -(-len(data) // CHUNK_BYTES))
    digest = hashlib.sha256(data).hexdigest()
    records = []
    for index in range(count):
        header = {"version": version, "index": index, "count": count, "size": len(data), "sha256": digest}
        payload = data[index * CHUNK_BYTES:(index + 1) * CHUNK_BYTES]
        records.append((f"chunk-{index:06d}".encode(), json.dumps(header).encode() + b"\n" + payload))
    return records


def parse_chunk(value: bytes) -> tuple[ChunkHeader, bytes]:
    """Split a record value into its header and payload.

    Raises
    ------
    MalformedChunk
        No header line, or one that does not describe a chunk.
    """
    line, newline, payload = value.partition(b"\n")
    if not newline:
        raise MalformedChunk("models-topic record without a header line")
    try:
        fields = json.loads(line)
        header = ChunkHeader(str(fields["version"]), int(fields["index"]), int(fields["count"]),
                             int(fields["size"]), str(fields["sha256"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedChunk(f"models-topic record with a bad header: {exc}") from exc
    if not 0 <= header.index < header.count:
        raise MalformedChunk(f"chunk {header.index} of {header.count} is out of range")
    return header, payload


class SnapshotAssembler:
    """Collects one version's chunks at a time; memory is bounded by one snapshot."""

    def __init__(self) -> None:
        self._header: ChunkHeader | None = None
        self._chunks: dict[int, bytes] = {}

    def add(self, value: bytes) -> tuple[str, bytes] | None:
        """Add one record value; ``(version, data)`` when it completes a snapshot.

        A chunk of another version than the one being collected starts over with it
        (the trainer writes a version's chunks in a row, so an interrupted one is dropped).

        Raises
        ------
        MalformedChunk
            The record is not a chunk, or the completed snapshot's size or digest is wrong.
        """
        header, payload = parse_chunk(value)
        current = self._header
        if current is None or (header.version, header.count, header.sha256) != (
                current.version, current.count, current.sha256):
            self._header, self._chunks = header, {}
        self._chunks[header.index] = payload
        if len(self._chunks) < header.count:
            return None
        data = b"".join(self._chunks[index] for index in range(header.count))
        self._header, self._chunks = None, {}
        if len(data) != header.size or hashlib.sha256(data).hexdigest() != header.sha256:
            raise MalformedChunk(f"snapshot {header.version}: size or SHA-256 does not match its header")
        return header.version, data
