"""``micro_batches``: how a worker's events stream groups into batches (Faust's agent test context)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import faust

from streamrec.streams.app import micro_batches
from tests.unit.faust_harness import until


def batches_of(puts: Callable[[faust.types.AgentT], object], max_events: int, max_wait_s: float,
               more_coming: bool) -> list[tuple[list[bytes], float]]:
    """The batches an agent takes (values, and when it took each) while ``puts(agent)`` feeds it."""
    app = faust.App("micro-batches-test", store="memory://", autodiscover=False)
    topic = app.topic("events", value_serializer="raw")
    taken: list[tuple[list[bytes], float]] = []

    @app.agent(topic)
    async def process(stream):
        async for batch in micro_batches(stream, max_events, max_wait_s, lambda event: more_coming):
            taken.append(([event.value for event in batch], time.monotonic()))

    async def main() -> None:
        async with process.test_context() as agent:
            sent = await puts(agent)
            await until(lambda: sum(len(values) for values, _ in taken) >= sent)

    asyncio.run(main())
    return taken


def spaced(gap_s: float, count: int = 2) -> Callable[[faust.types.AgentT], object]:
    """Put ``count`` events ``gap_s`` apart, as the fetcher hands them over one at a time."""
    async def puts(agent) -> int:
        for n in range(count):
            if n:
                await asyncio.sleep(gap_s)
            await agent.put(f"e{n}".encode(), key=b"u", wait=False)
        return count
    return puts


def test_a_worker_behind_waits_for_the_events_the_broker_already_holds() -> None:
    taken = batches_of(spaced(0.02, count=3), max_events=10, max_wait_s=0.3, more_coming=True)
    assert [values for values, _ in taken] == [[b"e0", b"e1", b"e2"]]


def test_a_worker_that_keeps_up_takes_each_event_alone_at_once() -> None:
    taken = batches_of(spaced(0.05), max_events=10, max_wait_s=2.0, more_coming=False)
    assert [values for values, _ in taken] == [[b"e0"], [b"e1"]]
    assert taken[1][1] - taken[0][1] >= 0.04  # the first did not wait for the second


def test_a_batch_waits_no_longer_than_the_wait_after_its_first_event() -> None:
    taken = batches_of(spaced(0.5), max_events=10, max_wait_s=0.05, more_coming=True)
    assert [values for values, _ in taken] == [[b"e0"], [b"e1"]]
    assert taken[1][1] - taken[0][1] >= 0.3  # the first went before the second was put


def test_a_batch_holds_at_most_max_events_and_keeps_their_order() -> None:
    taken = batches_of(spaced(0.0, count=7), max_events=3, max_wait_s=0.5, more_coming=True)
    values = [value for batch, _ in taken for value in batch]
    assert values == [f"e{n}".encode() for n in range(7)]
    assert max(len(batch) for batch, _ in taken) == 3
