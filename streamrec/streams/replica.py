"""Every worker's replica of a compacted topic, read from the beginning of all partitions.

Faust agents consume only the partitions assigned to their worker. The item
state must be known to *every* worker (each one ranks all items), so each
worker reads the whole compacted item-state topic with its own group-less
consumer and applies each record to its in-memory model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamrec.config import KafkaSettings
from streamrec.streams.clients import TopicMissing
from streamrec.streams.topics import client_options

log = logging.getLogger(__name__)

ApplyRecord = Callable[[bytes | None, bytes | None, int], None]
"""Called with a record's key, value and timestamp (epoch ms)."""


#: Records a replica applies before it lets the event loop run other work (events wait
#: behind a whole fetch otherwise: a few hundred item states take several milliseconds).
#: 16 held the loop over 3 ms less often at 1,000 events/s (2-3 against 25-28 times in 15 s),
#: but cost the worker 7% more CPU per event at 5,000 events/s (six rounds side by side):
#: switching between the replica and the events more often costs more than it saves.
APPLY_CHUNK = 64

#: Fetch wait of replicas of rarely written topics (item info, models): on the embedded broker
#: an idle consumer sends one fetch per wait, and each costs the worker and the broker CPU.
RARELY_WRITTEN_FETCH_WAIT_MS = 500


async def replicate_topic(kafka: KafkaSettings, topic: str, apply: ApplyRecord,
                          ready: asyncio.Event | None = None, positions: dict[int, int] | None = None,
                          fetch_max_wait_ms: int | None = None) -> None:
    """Apply every record of ``topic`` (all partitions) until cancelled.

    ``positions`` (partition -> next offset) says where to start, from a snapshot (partitions
    not in it start from the beginning; an offset past a partition's end restarts it from its
    beginning), and is kept up to date as records are applied.
    ``ready`` is set once the replica has caught up with the records present at start.
    ``fetch_max_wait_ms`` overrides ``kafka.fetch_max_wait_ms`` (for topics where a
    record may wait longer, see :data:`RARELY_WRITTEN_FETCH_WAIT_MS`).
    A record that ``apply`` rejects is logged and skipped: it must not stop replication.
    """
    positions = {} if positions is None else positions
    consumer = AIOKafkaConsumer(
        **client_options(kafka), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=max(fetch_max_wait_ms or kafka.fetch_max_wait_ms, 1),
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        fresh = [tp for tp in partitions if tp.partition not in positions]
        if fresh:  # no arguments would mean every partition
            await consumer.seek_to_beginning(*fresh)
        for tp in partitions:
            if tp.partition in positions:
                consumer.seek(tp, positions[tp.partition])
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            applied = 0
            for records in batches.values():
                for record in records:
                    try:
                        apply(record.key, record.value, record.timestamp)
                    except ValueError as exc:  # InvalidRecord is a ValueError
                        log.warning("skipping malformed record %s[%d]@%d: %r", topic,
                                    record.partition, record.offset, exc)
                    positions[record.partition] = record.offset + 1
                    applied += 1
                    if applied % APPLY_CHUNK == 0:
                        await asyncio.sleep(0)
            if ready is not None and not ready.is_set() and await _caught_up(consumer, partitions):
                ready.set()
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(100):
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await consumer.topics()  # refreshes metadata
        await asyncio.sleep(0.1)
    raise TopicMissing(f"topic {topic!r} does not exist; create it with `streamrec topics create`")


async def _caught_up(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    # The fetch high watermark (not ListOffsets) is right on the embedded broker.
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
