"""``Sender.store``: a table write lands in the event's partition, locally and in the changelog,
and the local store remembers how far its changelog is delivered (where recovery resumes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.errors import KafkaTimeoutError
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


def test_a_record_that_cannot_be_delivered_stops_the_worker() -> None:
    # Its events must not be committed: a crash stops the worker before the next commit,
    # and after the restart they are processed again.
    crashed: list[BaseException] = []

    class Client:  # aiokafka's producer as Sender uses it
        def __init__(self) -> None:
            self.deliveries: list[asyncio.Future] = []

        async def send(self, topic, value, key=None, partition=None) -> asyncio.Future:
            self.deliveries.append(asyncio.get_running_loop().create_future())
            return self.deliveries[-1]

    client = Client()

    class Producer:
        def _ensure_producer(self) -> Client:
            return client

    class App:
        async def maybe_start_producer(self) -> Producer:
            return Producer()

        async def crash(self, exc: BaseException) -> None:
            crashed.append(exc)

    async def main() -> None:
        sender = Sender(App())
        await sender.send("lists", b"u1", b"{}")
        await sender.send("lists", b"u2", b"{}")
        client.deliveries[0].set_result(None)
        client.deliveries[1].set_exception(KafkaTimeoutError("broker gone"))
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert [type(exc) for exc in crashed] == [KafkaTimeoutError]
