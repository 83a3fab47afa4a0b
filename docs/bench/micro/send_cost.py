"""Per-record cost of handing records to aiokafka's producer, on the embedded broker.

    python docs/bench/micro/send_cost.py

Records go out in micro-batches of 64, 1 ms apart. ``send``: ``AIOKafkaProducer.send`` per
record with a partition (what the worker did); ``send, keyed``: the same, partitioned by key;
``send_many``: ``streamrec.streams.sends.Sender``, one call per micro-batch (``keyed``: as
the worker sends its lists, partitioned by user). Five rounds,
alternating; prints medians in µs per record (the time in the calls, not the delivery).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamrec.broker import EmbeddedBroker
from streamrec.streams.sends import Record, Sender

RECORDS, BATCH = 20_000, 64  # records per round, per micro-batch


class App:  # what Sender uses of a Faust app
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def maybe_start_producer(self) -> App:
        return self

    def _ensure_producer(self) -> AIOKafkaProducer:
        return self.producer


async def main(url: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    await admin.create_topics([NewTopic("t", 4, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=5, max_batch_size=262_144)
    await producer.start()
    await producer.send_and_wait("t", b"x", key=b"k", partition=0)
    sender = Sender(App(producer))
    value = b"v" * 300
    keys = [f"user-{n}".encode() for n in range(RECORDS)]

    batches = [[(key, value, n % 4) for n, key in enumerate(keys[start:start + BATCH])]
               for start in range(0, RECORDS, BATCH)]

    async def timed(send_batch: Callable[[list[Record]], Awaitable[object]]) -> float:
        spent = 0.0
        for batch in batches:
            started = time.perf_counter()
            await send_batch(batch)
            spent += time.perf_counter() - started
            await asyncio.sleep(0.001)  # the next micro-batch comes later; the sender runs meanwhile
        return spent

    async def send(batch: list[Record]) -> None:
        for key, record, partition in batch:
            await producer.send("t", record, key=key, partition=partition)

    async def send_keyed(batch: list[Record]) -> None:
        for key, record, _ in batch:
            await producer.send("t", record, key=key)

    async def send_many(batch: list[Record]) -> None:
        await sender.send_many("t", batch)

    async def send_many_keyed(batch: list[Record]) -> None:
        await sender.send_many("t", [(key, record, None) for key, record, _ in batch])

    runs: dict[str, list[float]] = {"send": [], "send, keyed": [], "send_many": [], "send_many, keyed": []}
    for _ in range(5):
        for name, run in zip(runs, (send, send_keyed, send_many, send_many_keyed), strict=True):
            runs[name].append(await timed(run) / RECORDS * 1e6)
            await producer.flush()
    for name, figures in runs.items():
        print(f"{name:17s} {statistics.median(figures):5.2f} µs per record")
    await producer.stop()


if __name__ == "__main__":
    with EmbeddedBroker(port=0) as broker:
        asyncio.run(main(broker.url))
