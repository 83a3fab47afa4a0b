"""The tools' Kafka clients against the real broker."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streamrec.config import Settings
from streamrec.streams.clients import open_consumer
from tests.harness import send, topic_names

pytestmark = pytest.mark.integration


def test_poll_returns_records_as_soon_as_they_arrive(settings: Settings) -> None:
    """A poll hands over what arrived without waiting for a full batch or its timeout.

    librdkafka's ``consume(n, timeout)`` waits for ``n`` records or the timeout; the benchmark's
    latency figures (send time to the moment a record is read) counted that wait.
    """
    topic = topic_names(settings).events
    consumer = open_consumer(settings, [topic], from_beginning=True)
    try:
        send(settings, topic, [(b"u1", b'{"n": 1}'), (b"u2", b'{"n": 2}')])
        started = time.monotonic()
        records: list[Any] = []
        while len(records) < 2 and time.monotonic() - started < 30:
            records += consumer.poll(timeout_s=30.0, max_records=1000)
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    assert sorted(record.value() for record in records) == [b'{"n": 1}', b'{"n": 2}']
    assert elapsed < 15.0, f"two records took {elapsed:.1f} s to read: the poll waited for a full batch"
