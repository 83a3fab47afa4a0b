"""One request/response round trip through ``streamrec.requests`` (``streamrec recommend``)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from streamrec.config import Settings
from streamrec.errors import StreamrecError
from streamrec.streams.clients import open_consumer, read
from streamrec.streams.clients import make_producer
from streamrec.streams.topics import TopicNames


class RequestRefused(StreamrecError):
    """The worker answered the request with an error."""


class NoAnswer(StreamrecError):
    """No recommendation answered the request in time."""

    retriable = True


def request_recommendations(settings: Settings, user_id: str, k: int | None = None,
                            timeout_s: float = 10.0) -> dict[str, Any]:
    """Send a request for ``user_id`` and return the recommendation that answers it.

    Raises
    ------
    NoAnswer
        When no answer arrives within ``timeout_s`` (is a worker running?).
    """
    names = TopicNames.for_prefix(settings.topics.prefix)
    request_id = uuid.uuid4().hex
    consumer = open_consumer(settings, [names.recommendations], from_beginning=False)
    producer = make_producer(settings)
    try:
        body: dict[str, Any] = {"request_id": request_id, "user_id": user_id}
        if k is not None:
            body["k"] = k
        producer.send(names.requests, key=user_id.encode(), value=json.dumps(body).encode())
        producer.flush()
        for record in read(consumer, until_s=time.monotonic() + timeout_s):
            if isinstance(record.value, dict) and record.value.get("request_id") == request_id:
                if record.value.get("error"):
                    raise RequestRefused(f"the worker refused the request: {record.value['error']}")
                return record.value
    finally:
        producer.close()
        consumer.close()
    raise NoAnswer(
        f"no answer to request {request_id} for user {user_id!r} within {timeout_s:.0f}s. "
        f"Is a worker running against {settings.kafka.broker}? Start one with `streamrec worker`."
    )
