"""``streamrec relay``: the floor under streamrec's latency, a Faust app that only forwards events.

It consumes ``streamrec.events`` with the worker's consumer tuning and producer, and sends
every event unchanged to ``streamrec.recommendations`` (keyed as it came): no decoding, no
state, no model. With ``worker.relay_record_bytes`` each copy is padded with trailing spaces
to the size of a recommendation list, so both output topics hold as many bytes. ``streamrec bench e2e`` runs it through the same broker, settings and
topic sizes as the worker, so what streamrec adds on top of Kafka and Faust shows as a
difference.
"""

from __future__ import annotations

from faust.types import StreamT

from streamrec.config import Settings
from streamrec.streams.app import TunedApp, tuned_app
from streamrec.streams.topics import RAW_BYTES, TopicNames


def create_relay_app(settings: Settings) -> TunedApp:
    """The relay's Faust app (nothing connects until it starts)."""
    app = tuned_app(settings, TunedApp, "memory://")
    names, n = TopicNames.for_prefix(settings.topics.prefix), settings.topics.partitions
    events = app.topic(names.events, partitions=n, **RAW_BYTES)
    output = app.topic(names.recommendations, partitions=n, **RAW_BYTES)
    size = settings.worker.relay_record_bytes

    @app.agent(events, name="streamrec.relay")
    async def relay(stream: StreamT) -> None:
        async for event in stream.events():
            output.send_soon(key=event.key, value=padded(event.value, size))  # as the worker emits

    return app


def padded(value: bytes, size: int) -> bytes:
    """``value`` (a JSON document) with trailing spaces up to ``size`` bytes: the same JSON, as
    many bytes on the broker as a recommendation list (its fetches slow down with a topic's bytes)."""
    return value + b" " * (size - len(value)) if len(value) < size else value
