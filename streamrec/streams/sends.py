"""The worker's writes to Kafka and to its tables, straight through aiokafka's producer.

Faust's ``Topic.send``/``send_soon`` and ``table[key] = value`` wrap every record in a
``FutureMessage``, queue it in Faust's own producer buffer, drain that buffer from another
task, then run callbacks and sensors on delivery. A profile at 1,000 events/s put that
wrapping at about three times aiokafka's own cost per record, and the worker writes two
or three records per event (its list, the user's state, item updates). :class:`Sender`
hands each record to aiokafka directly.

Delivery guarantees stay Faust's: before committing offsets, Faust's consumer flushes the
app's producer (``Consumer.commit`` -> ``producer.flush()`` -> aiokafka's ``flush``), the
one these records were queued on, so a record is delivered before the offset of the event
that caused it is committed (at-least-once, as with ``Topic.send``). A record aiokafka
fails to deliver (after its own retries) crashes the worker, so the events behind it are
not committed and are processed again after the restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust
from aiokafka.structs import RecordMetadata
from faust.types import TP, EventT

log = logging.getLogger(__name__)


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

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Queue one record; ``partition`` None lets Kafka's default partitioner choose by key.

        Returns the future of its delivery (awaiting this call only waits for room in the
        producer's buffer).
        """
        producer = await self.app.maybe_start_producer()
        delivery = await producer._ensure_producer().send(topic, value, key=key, partition=partition)  # type: ignore[attr-defined]
        delivery.add_done_callback(self._check)
        return delivery

    def _check(self, delivery: asyncio.Future[Any]) -> None:
        exc = None if delivery.cancelled() else delivery.exception()
        if exc is not None:
            log.error("a record could not be delivered (%r): stopping, so its events are processed again", exc)
            asyncio.ensure_future(self.app.crash(exc))

    async def store(self, table: faust.Table, rows: Iterable[tuple[EventT, bytes, bytes]]) -> None:
        """Write each ``(event, key, value)`` to ``table`` (a table of raw bytes, on a store with
        ``set_in``: the worker's) and its changelog, in the partition of the row's event.

        What ``table[key] = value`` does, with one more saving: the changelog offset the
        local store keeps (where recovery resumes) is written once per partition and call,
        when the last record of that partition is delivered, instead of once per record.
        """
        changelog = table.changelog_topic.get_topic_name()
        last: dict[int, asyncio.Future[RecordMetadata]] = {}
        for event, key, value in rows:
            partition = event.message.partition
            table.data.set_in(partition, key, value)
            last[partition] = await self.send(changelog, key, value, partition)
        for partition, delivered in last.items():
            delivered.add_done_callback(lambda future, tp=TP(changelog, partition): _persisted(table, tp, future))


def _persisted(table: faust.Table, tp: TP, delivered: asyncio.Future[Any]) -> None:
    if not delivered.cancelled() and delivered.exception() is None:
        table.data.set_persisted_offset(tp, delivered.result().offset)
