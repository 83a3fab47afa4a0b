"""The worker's writes to Kafka and to its tables, straight into aiokafka's producer.

Faust's ``Topic.send``/``send_soon`` and ``table[key] = value`` wrap every record in a
``FutureMessage``, queue it in Faust's own producer buffer, drain that buffer from another
task, then run callbacks and sensors on delivery. A profile at 1,000 events/s put that
wrapping at about three times aiokafka's own cost per record, and the worker writes two
or three records per event (its list, the user's state, item updates). :class:`Sender`
hands records to aiokafka's record accumulator directly, a micro-batch at a time.

``AIOKafkaProducer.send`` itself makes a metadata wait, serializer calls, partitioning
(pure-Python murmur2 for a key) and a future per record. :meth:`Sender.send_many` does the
per-topic part once per call, partitions keys with a compiled murmur2 and appends each
record to the accumulator (``docs/bench/micro/send_cost.py`` measures both). It relies on
aiokafka internals (``_message_accumulator``, its batches and their ``_linger_time``, ``_metadata``,
``_partitioner``, ``client._wait_on_metadata``, as in aiokafka 0.14); a transactional
producer keeps aiokafka's public ``send``.

Delivery guarantees stay Faust's: before committing offsets, Faust's consumer flushes the
app's producer (``Consumer.commit`` -> ``producer.flush()`` -> aiokafka's ``flush``), the
one these records were queued on, so a record is delivered before the offset of the event
that caused it is committed (at-least-once, as with ``Topic.send``). A batch aiokafka
fails to deliver (after its own retries) crashes the worker, so the events behind it are
not committed and are processed again after the restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.types import TP, EventT

from streamrec.streams.topics import key_partition

log = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes | None, int | None]
"""``(key, value, partition)``; partition ``None`` lets the producer's partitioner choose by key."""


def stored(table: faust.Table, key: bytes, partition: int | None = None) -> bytes | None:
    """The value of ``key`` in a table of raw bytes, in one store read (``None`` if absent).

    With ``partition`` (the key's, as its event's on the partition's owner) it reads that
    partition's store only (``Store.get_in``: the worker's stores skip Faust's per-access
    layers). Without, it is ``table.data.get``: the current event's partition inside a
    stream, every partition outside one. (``table.get`` would read twice: Faust's tables
    define ``__missing__``, so mode's dict proxy checks ``key in store`` first.)
    """
    return table.data.get(key) if partition is None else table.data.get_in(partition, key)


class Sender:
    """Sends records on the app's producer, and writes tables with their changelogs."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._watched: dict[TopicPartition, asyncio.Future[Any]] = {}  # the batch last checked, by partition

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Queue one record (see :meth:`send_many`); returns the future of its delivery."""
        return (await self.send_many(topic, [(key, value, partition)]))[0]

    async def send_many(self, topic: str, records: Iterable[Record],
                        linger: bool = True) -> list[asyncio.Future[RecordMetadata]]:
        """Queue records to ``topic`` in order; the futures of their deliveries.

        With ``linger=False`` the producer sends them, and every record queued before them,
        without waiting its ``linger_ms`` for more (see :func:`_send_now`). Awaiting this call
        only waits for room in the producer's buffer (a full batch).
        """
        producer: AIOKafkaProducer = (await self.app.maybe_start_producer())._ensure_producer()  # type: ignore[attr-defined]
        if producer._txn_manager is not None:  # transactions: aiokafka's bookkeeping per record
            deliveries = [await producer.send(topic, value, key=key, partition=partition)
                          for key, value, partition in records]
            for delivery in deliveries:
                delivery.add_done_callback(self._check)
            return deliveries
        await producer.client._wait_on_metadata(topic)
        accumulator = producer._message_accumulator
        batches = accumulator._batches
        timeout = producer._request_timeout_ms / 1000
        limit = producer._max_request_size
        metadata = producer._metadata
        known = metadata.partitions_for_topic(topic)
        choices: tuple[list[int], list[int]] | None = None  # for the partitioner, as aiokafka's send gives them
        by_key = isinstance(producer._partitioner, DefaultPartitioner)
        tps: dict[int, TopicPartition] = {}
        deliveries = []
        for key, value, partition in records:
            if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []) > limit:
                raise MessageSizeTooLargeError(f"a record to {topic} is over the producer's "
                                               f"max_request_size ({limit} bytes)")
            if partition is None:
                if choices is None:
                    choices = list(known), list(metadata.available_partitions_for_topic(topic))
                if key is not None and by_key:  # what DefaultPartitioner computes, compiled
                    partition = choices[0][key_partition(key, len(choices[0]))]
                else:
                    partition = producer._partitioner(key, *choices)
            elif partition not in known:
                raise ValueError(f"{topic} has no partition {partition}")
            tp = tps.get(partition)
            if tp is None:
                tp = tps[partition] = TopicPartition(topic, partition)
            deliveries.append(await accumulator.add_message(tp, key, value, timeout))
            batch = batches[tp][-1].future  # of the batch this record joined
            if self._watched.get(tp) is not batch:  # one failure check per batch, not per record
                self._watched[tp] = batch
                batch.add_done_callback(self._check)
        if not linger:
            _send_now(accumulator)
        return deliveries

    def _check(self, delivery: asyncio.Future[Any]) -> None:
        exc = None if delivery.cancelled() else delivery.exception()
        if exc is not None:
            log.error("records could not be delivered (%r): stopping, so their events are processed again", exc)
            asyncio.ensure_future(self.app.crash(exc))

    async def store(self, table: faust.Table, rows: Iterable[tuple[EventT, bytes, bytes]]) -> None:
        """Write each ``(event, key, value)`` to ``table`` (a table of raw bytes, on a store with
        ``set_in``: the worker's) and its changelog, in the partition of the row's event.

        What ``table[key] = value`` does, with one more saving: the changelog offset the
        local store keeps (where recovery resumes) is written once per partition and call,
        when the last record of that partition is delivered, instead of once per record.
        """
        changelog = table.changelog_topic.get_topic_name()
        records: list[Record] = []
        for event, key, value in rows:
            partition = event.message.partition
            table.data.set_in(partition, key, value)
            records.append((key, value, partition))
        deliveries = await self.send_many(changelog, records)
        last = {partition: delivered for (_, _, partition), delivered in zip(records, deliveries, strict=True)}
        for partition, delivered in last.items():
            delivered.add_done_callback(lambda future, tp=TP(changelog, partition): _persisted(table, tp, future))


def _send_now(accumulator: Any) -> None:
    """Let the producer send every batch it holds at its next turn instead of after their linger.

    Records a worker appends together (a micro-batch's lists) arrive at once, so lingering
    only delays them: the first waits the whole ``linger_ms`` and no later record joins it.
    The batches of other topics (the batch's changelog records) go in the same request:
    sent apart, they made a request more per batch, and the embedded broker, at 80% of a
    core, answered the worker's fetches later. A batch stays open until it goes (a closed
    one would make the next append wait until it is on its way).
    """
    for batches in accumulator._batches.values():
        for batch in batches:
            batch._linger_time = 0.0
    waiter = accumulator.waiter()  # what the sender task waits on between requests
    if not waiter.done():
        waiter.set_result(None)


def _persisted(table: faust.Table, tp: TP, delivered: asyncio.Future[Any]) -> None:
    if not delivered.cancelled() and delivered.exception() is None:
        table.data.set_persisted_offset(tp, delivered.result().offset)
