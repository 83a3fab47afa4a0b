"""Plain Kafka clients (confluent-kafka, i.e. librdkafka) for tools outside the worker.

The load producer, ``streamrec consume``/``recommend``, the demo and the tests
talk to Kafka through these functions, so Kafka imports stay in ``streams/``.
Connection failures become :class:`BrokerUnavailable` with a message saying what to do.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, Producer, TopicPartition

from streamrec.config import KafkaSettings, Settings
from streamrec.errors import BrokerError, StreamrecError
from streamrec.streams import binary_items

ErrorCallback = Callable[[Exception], None]


class TopicMissing(StreamrecError, ValueError):
    """A topic streamrec needs does not exist."""


class BrokerUnavailable(BrokerError):
    """No broker answered at the configured address."""


def _unavailable(settings: Settings, exc: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"cannot reach Kafka at {settings.kafka.broker} ({exc!r}). Start one with "
        "`streamrec broker`, or pass --broker / set STREAMREC_KAFKA__BROKER.")


def librdkafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection settings in librdkafka's names (what ``topics.client_options`` gives the Python clients)."""
    options: dict[str, Any] = {"bootstrap.servers": ",".join(kafka.bootstrap_servers),
                               "security.protocol": kafka.security_protocol,
                               # librdkafka would print every failed connection attempt; the failures
                               # that matter reach the user as streamrec's own errors and counts.
                               "log_level": 2}
    if kafka.security_protocol.startswith("SASL"):
        options.update({"sasl.mechanism": kafka.sasl_mechanism, "sasl.username": kafka.sasl_username,
                        "sasl.password": kafka.sasl_password.get_secret_value() if kafka.sasl_password else None})
    for option, path in (("ssl.ca.location", kafka.ssl_cafile), ("ssl.certificate.location", kafka.ssl_certfile),
                         ("ssl.key.location", kafka.ssl_keyfile)):
        if path and kafka.security_protocol in ("SSL", "SASL_SSL"):
            options[option] = str(path)
    return {key: value for key, value in options.items() if value is not None}


class StreamProducer:
    """A producer for tools outside the worker (librdkafka: the load producer must cost little CPU)."""

    def __init__(self, settings: Settings) -> None:
        # murmur2_random: keyed records land where Kafka's Java client (and aiokafka, and the
        # workers' routing) put them; librdkafka's own default hashes differently.
        self._producer = Producer({**librdkafka_options(settings.kafka), "acks": 1, "partitioner": "murmur2_random",
                                   "linger.ms": settings.kafka.producer_linger_ms, "retries": 5})

    def send(self, topic: str, key: bytes | None, value: bytes | None, on_error: ErrorCallback | None = None) -> None:
        """Queue one record; a delivery failure calls ``on_error`` (from a later ``send`` or ``flush``)."""
        def delivered(error: Any, _message: Any) -> None:
            if error is not None and on_error is not None:
                on_error(KafkaException(error))
        try:
            self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except BufferError:  # the local queue is full: let deliveries drain, then retry once
            self._producer.flush(5)
            self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
        self._producer.poll(0)  # serve delivery callbacks

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is delivered (or failed)."""
        self._producer.flush(timeout_s)

    def close(self) -> None:
        """Deliver what is queued; the client is released when the object is dropped."""
        self.flush()

    def check_connection(self, timeout_s: float) -> None:
        """Raise ``KafkaException`` unless a broker answers a metadata request within ``timeout_s``."""
        self._producer.list_topics(timeout=timeout_s)


def make_producer(settings: Settings) -> StreamProducer:
    """A producer with streamrec's connection and latency settings; fails fast if no broker answers."""
    producer = StreamProducer(settings)
    try:
        producer.check_connection(timeout_s=5)
    except KafkaException as exc:
        raise _unavailable(settings, exc) from exc
    return producer


@dataclass(frozen=True, slots=True)
class Received:
    """One consumed record with its decoded JSON value and the time it arrived."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    received_ms: int
    created_ms: int | None = None
    """The record's timestamp (the producer's send time, or the broker's append time), if it has one."""


class StreamConsumer:
    """A group-less consumer assigned to fixed partitions (see :func:`open_consumer`)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def poll(self, timeout_s: float, max_records: int = 1000) -> list[Any]:
        """Records that arrived, waiting up to ``timeout_s`` for the first one, then taking only those already here."""
        # librdkafka's consume(n, timeout) returns when it has n records or the timeout is up: at
        # 1,000 records/s and 100 ms that held each record back ~50 ms (p50), ~95 ms (p99).
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        messages = [first, *(self._consumer.consume(max_records - 1, 0) if max_records > 1 else ())]
        return [message for message in messages if message.error() is None]

    def close(self) -> None:
        """Leave: no offsets are committed (there is no group)."""
        self._consumer.close()


def open_consumer(settings: Settings, topics: list[str], from_beginning: bool,
                  fetch_max_wait_ms: int | None = None) -> StreamConsumer:
    """A consumer assigned to every partition of ``topics``, from the beginning or from the current end.

    Without ``from_beginning`` the end is resolved before returning, so nothing sent
    afterwards is missed. (The embedded broker's end can be a few records early: callers match by id.)
    ``fetch_max_wait_ms`` overrides ``kafka.fetch_max_wait_ms`` for a reader that needs no latency.
    """
    wait_ms = settings.kafka.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms
    consumer = Consumer({**librdkafka_options(settings.kafka), "group.id": f"streamrec-tool-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": max(wait_ms, 1),
                         "fetch.queue.backoff.ms": 1})
    try:
        partitions = [TopicPartition(topic, p) for topic in topics for p in _partitions(consumer, topic)]
        if not from_beginning:
            partitions = [TopicPartition(tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=10)[1])
                          for tp in partitions]
        else:
            partitions = [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions]
    except KafkaException as exc:
        consumer.close()
        raise _unavailable(settings, exc) from exc
    except TopicMissing:
        consumer.close()
        raise
    consumer.assign(partitions)
    return StreamConsumer(consumer)


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    for _ in range(50):
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            return sorted(found.partitions)
        time.sleep(0.1)
    raise TopicMissing(f"topic {topic!r} does not exist; create it with `streamrec topics create`")


def read(consumer: StreamConsumer, idle_timeout_s: float | None = None,
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
        messages = consumer.poll(0.1)
        arrived = int(time.time() * 1000)
        for message in messages:
            last = time.monotonic()
            key = message.key()
            kind, created = message.timestamp()
            yield Received(message.topic(), message.partition(), message.offset(),
                           key.decode(errors="replace") if key else None, _decode(message.value()), arrived,
                           created if kind != TIMESTAMP_NOT_AVAILABLE else None)


def _decode(value: bytes | None) -> Any:
    if value is None:
        return None
    internal = binary_items.as_json_object(value)  # the binary item topics, shown as JSON
    if internal is not None:
        return internal
    try:
        return json.loads(value)
    except ValueError:
        return value.decode(errors="replace")
