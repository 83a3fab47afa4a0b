"""Plain Kafka clients (kafka-python) for tools outside the worker.

The load producer, ``streamrec consume``/``recommend``, the demo and the tests
talk to Kafka through these functions, so Kafka imports stay in ``streams/``.
Connection failures become :class:`BrokerUnavailable` with a message saying what to do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamrec.config import Settings
from streamrec.errors import BrokerError, StreamrecError
from streamrec.streams.topics import client_options


class TopicMissing(StreamrecError, ValueError):
    """A topic streamrec needs does not exist."""


class BrokerUnavailable(BrokerError):
    """No broker answered at the configured address."""


def _unavailable(settings: Settings, exc: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"cannot reach Kafka at {settings.kafka.broker} ({exc!r}). Start one with "
        "`streamrec broker`, or pass --broker / set STREAMREC_KAFKA__BROKER.")


def make_producer(settings: Settings) -> KafkaProducer:
    """A kafka-python producer with streamrec's connection and latency settings."""
    try:
        return KafkaProducer(**client_options(settings.kafka),
                             linger_ms=settings.kafka.producer_linger_ms, acks=1, retries=5)
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc


@dataclass(frozen=True, slots=True)
class Received:
    """One consumed record with its decoded JSON value and the time it arrived."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    received_ms: int


def open_consumer(settings: Settings, topics: list[str], from_beginning: bool) -> KafkaConsumer:
    """A group-less consumer assigned to every partition of ``topics``.

    Without ``from_beginning`` it starts at the current end (positions are
    resolved before returning, so nothing sent afterwards is missed).
    """
    try:
        consumer = KafkaConsumer(
            **client_options(settings.kafka), group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=max(settings.kafka.fetch_max_wait_ms, 1),
            auto_offset_reset="earliest" if from_beginning else "latest")
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc
    partitions = [TopicPartition(topic, p) for topic in topics
                  for p in sorted(_partitions(consumer, topic))]
    consumer.assign(partitions)
    if from_beginning:
        consumer.seek_to_beginning(*partitions)
    else:
        # Resolve the end now so records sent after we return are not skipped.
        # (The embedded broker's end can be a few records early: callers match by id.)
        consumer.seek_to_end(*partitions)
        for tp in partitions:
            consumer.position(tp)
    return consumer


def _partitions(consumer: KafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return found
        time.sleep(0.1)
    raise TopicMissing(f"topic {topic!r} does not exist; create it with `streamrec topics create`")


def read(consumer: KafkaConsumer, idle_timeout_s: float | None = None,
         until_s: float | None = None, stop: Callable[[], bool] | None = None) -> Iterator[Received]:
    """Yield records as they arrive.

    Stops after ``idle_timeout_s`` without records, at ``until_s`` (monotonic
    clock), or when ``stop()`` returns true (checked at least every 100 ms).
    """
    last = time.monotonic()
    while True:
        now = time.monotonic()
        if (until_s is not None and now >= until_s) or (stop is not None and stop()):
            return
        if idle_timeout_s is not None and now - last > idle_timeout_s:
            return
        batches = consumer.poll(timeout_ms=100)
        arrived = int(time.time() * 1000)
        for records in batches.values():
            for record in records:
                last = time.monotonic()
                yield Received(record.topic, record.partition, record.offset,
                               record.key.decode(errors="replace") if record.key else None,
                               _decode(record.value), arrived)


def _decode(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value.decode(errors="replace")
