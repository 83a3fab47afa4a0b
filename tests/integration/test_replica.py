"""A worker's replica of a topic (``replicate_topic``) against the real broker."""

from __future__ import annotations

import asyncio

import pytest

from streamrec.config import Settings
from streamrec.streams.replica import APPLY_CHUNK, replicate_topic
from tests.harness import send, topic_names

pytestmark = pytest.mark.integration


def test_a_replica_lets_events_through_while_it_applies_a_large_fetch(settings: Settings) -> None:
    """Other tasks run at least every ``APPLY_CHUNK`` applied records, not only between fetches:
    a worker's events would otherwise wait behind every record of a fetch."""
    topic = topic_names(settings).item_state
    count = 20 * APPLY_CHUNK
    send(settings, topic, [(f"item{n}".encode(), b"state") for n in range(count)])
    applied: list[bytes | None] = []
    seen: list[int] = []  # records applied whenever the other task ran

    async def main() -> None:
        ready = asyncio.Event()
        replica = asyncio.create_task(replicate_topic(settings.kafka, topic,
                                                      lambda key, value, ts: applied.append(key), ready))
        try:
            async with asyncio.timeout(60):
                while len(applied) < count:
                    seen.append(len(applied))
                    await asyncio.sleep(0)
        finally:
            replica.cancel()

    asyncio.run(main())
    assert sorted(applied) == sorted(f"item{n}".encode() for n in range(count))
    steps = [later - earlier for earlier, later in zip(seen, [*seen[1:], len(applied)], strict=True)]
    assert max(steps) <= APPLY_CHUNK, f"{max(steps)} records were applied in one go"
