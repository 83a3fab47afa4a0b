"""``Sender.store``: a table write lands in the event's partition, locally and in the changelog,
and the local store remembers how far its changelog is delivered (where recovery resumes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from faust.types import TP

from streamrec.streams.rocksdb_store import STORE_URL
from streamrec.streams.sends import Sender, stored
from tests.unit.faust_harness import make_app


class Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition


class Event:  # what Sender.store reads of an event: its message's partition
    def __init__(self, partition: int) -> None:
        self.message = Message(partition)


def test_rows_are_stored_and_logged_in_their_events_partition_and_the_delivered_offset_is_kept(
        tmp_path: Path) -> None:
    app = make_app(tmp_path, store=STORE_URL)
    outboxes = app.outboxes
    table = app.pipeline.users
    changelog = table.changelog_topic.get_topic_name()
    rows = [(Event(0), b"a", b"1"), (Event(1), b"b", b"2"), (Event(0), b"c", b"3")]

    async def main() -> None:
        await app.pipeline.sender.store(table, rows)
        await asyncio.sleep(0)  # delivery callbacks run

    asyncio.run(main())

    logged = outboxes.box(changelog)
    assert list(zip(logged.partitions, logged.keys, logged.messages, strict=True)) == [
        (0, b"a", (b"a", b"1")), (1, b"b", (b"b", b"2")), (0, b"c", (b"c", b"3"))]
    store = table.data
    assert {key: store._db_for_partition(0).get(key) for key in (b"a", b"b", b"c")} == {
        b"a": b"1", b"b": None, b"c": b"3"}
    assert store._db_for_partition(1).get(b"b") == b"2"
    assert [stored(table, key, partition) for key, partition in ((b"a", 0), (b"b", 1), (b"b", 0))] == [b"1", b"2", None]
    assert stored(table, b"b") == b"2"  # no partition named (an HTTP read): found in its partition
    # The fake delivers offsets 0, 1, 2 in send order: partition 0's last record is offset 2.
    assert store.persisted_offset(TP(changelog, 0)) == 2
    assert store.persisted_offset(TP(changelog, 1)) == 1


class App:  # what Sender uses of a Faust app: its producer, and crash()
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.crashed: list[BaseException] = []

    async def maybe_start_producer(self) -> App:
        return self

    def _ensure_producer(self) -> AIOKafkaProducer:
        return self.producer

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


def unstarted_producer(partitions: int, **options: object) -> AIOKafkaProducer:
    """A real aiokafka producer whose metadata says every topic has ``partitions`` partitions
    (no broker: records stay in its accumulator, where the tests deliver or fail them)."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", **options)
    producer._closed = True  # never started, so nothing to close (aiokafka warns about it otherwise)

    async def known(topic: str) -> None:
        return None

    producer.client._wait_on_metadata = known
    producer._metadata.partitions_for_topic = lambda topic: set(range(partitions))
    producer._metadata.available_partitions_for_topic = lambda topic: set(range(partitions))
    return producer


def test_records_join_the_producers_batches_partitioned_as_aiokafka_would() -> None:
    async def main() -> None:
        producer = unstarted_producer(3, max_request_size=1000)
        sender = Sender(App(producer))
        keys = [f"user-{n}".encode() for n in range(20)]
        deliveries = await sender.send_many("lists", [(key, b"{}", None) for key in keys] + [(None, b"x", 2)])
        assert len(deliveries) == 21 and not any(delivery.done() for delivery in deliveries)
        batches = producer._message_accumulator._batches
        expected: dict[int, int] = {}
        for key in keys:
            partition = DefaultPartitioner()(key, [0, 1, 2], [0, 1, 2])
            expected[partition] = expected.get(partition, 0) + 1
        expected[2] = expected.get(2, 0) + 1
        assert {tp.partition: batch[0].record_count for tp, batch in batches.items()} == expected
        with pytest.raises(ValueError, match="no partition 3"):
            await sender.send("lists", b"k", b"v", 3)
        with pytest.raises(MessageSizeTooLargeError, match="max_request_size"):
            await sender.send("lists", b"k", b"v" * 2000)

    asyncio.run(main())


def test_a_batch_that_cannot_be_delivered_stops_the_worker() -> None:
    # Its events must not be committed: a crash stops the worker before the next commit,
    # and after the restart they are processed again.
    async def main() -> None:
        producer = unstarted_producer(2)
        app = App(producer)
        sender = Sender(app)
        first = await sender.send_many("lists", [(b"a", b"1", 0), (b"b", b"2", 1)])
        again = await sender.send_many("lists", [(b"c", b"3", 0), (b"d", b"4", 1)])  # join the open batches
        batches = producer._message_accumulator._batches
        zero, one = (batches[TopicPartition("lists", partition)][0] for partition in (0, 1))
        zero.done(base_offset=10)
        one.failure(KafkaTimeoutError("broker gone"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert [delivery.result().offset for delivery in (first[0], again[0])] == [10, 11]
        assert first[1].exception() is not None and again[1].exception() is not None
        assert [type(exc) for exc in app.crashed] == [KafkaTimeoutError]  # once per failed batch

    asyncio.run(main())


def test_records_sent_without_linger_go_at_the_senders_next_turn_with_all_queued_and_batches_stay_open() -> None:
    async def main() -> None:
        producer = unstarted_producer(2, linger_ms=60_000)
        sender = Sender(App(producer))
        accumulator = producer._message_accumulator
        await sender.send_many("changelog", [(b"a", b"1", 0)])
        await sender.send_many("lists", [(b"a", b"1", 0)])
        # as the sender task does after taking what is due: a new future to wait on (new
        # partitions' data or a linger's end resolves it)
        waiter = accumulator._waiter_future = asyncio.get_running_loop().create_future()
        lingering = {tp.topic: batches[0].remaining_linger() for tp, batches in accumulator._batches.items()}
        assert lingering["changelog"] > 50 and lingering["lists"] > 50 and not waiter.done()
        await sender.send_many("lists", [(b"b", b"2", 1), (b"c", b"3", 1)], linger=False)
        batches = accumulator._batches
        ready = {tp: batch[0].remaining_linger() is None for tp, batch in batches.items()}
        # every batch held is due now, the changelog's too: one request takes them all
        assert ready == {TopicPartition("changelog", 0): True, TopicPartition("lists", 0): True,
                         TopicPartition("lists", 1): True}
        assert waiter.done()  # the sender task, waiting for data or a linger to end, wakes up
        await sender.send_many("lists", [(b"d", b"4", 1)])  # joins the open batch, no wait for its drain
        assert batches[TopicPartition("lists", 1)][0].record_count == 3

    asyncio.run(main())
