"""``Sender.store``: a table write lands in the event's partition, locally and in the changelog,
and the local store remembers how far its changelog is delivered (where recovery resumes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faust.types import TP

from tests.unit.faust_harness import make_app


class Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition


class Event:  # what Faust's tables read from the current event: its message's partition
    def __init__(self, partition: int) -> None:
        self.message = Message(partition)


def test_rows_are_stored_and_logged_in_their_events_partition_and_the_delivered_offset_is_kept(
        tmp_path: Path) -> None:
    app = make_app(tmp_path, store="rocksdb://")
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
    # The fake delivers offsets 0, 1, 2 in send order: partition 0's last record is offset 2.
    assert store.persisted_offset(TP(changelog, 0)) == 2
    assert store.persisted_offset(TP(changelog, 1)) == 1
