"""Harness for testing the worker's stream processors under Faust's ``agent.test_context()``.

No broker: tables use ``streamrec-memory://`` (Faust's in-memory store) and the pipeline's sender hands every record to an
``Outbox`` recorder per topic instead of Kafka (faust ``docs/userguide/testing.rst``, "Mock
anything that leaves the process"). ``create_app`` takes the store URL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamrec.config import load_settings
from streamrec.streams.app import StreamrecApp, create_app
from streamrec.streams.memory_store import STORE_URL as MEMORY_STORE
from streamrec.streams import binary_items
from streamrec.streams.pipeline import Pipeline

PREFIX = "unit."
T0_MS = 1_700_000_000_000




@pytest.fixture
def app(tmp_path: Path) -> StreamrecApp:
    return make_app(tmp_path)


def make_app(tmp_path: Path, store: str = MEMORY_STORE, **sections: dict) -> StreamrecApp:
    """A worker app for the harness: two partitions, in-memory tables, k = 3 (``sections`` add settings)."""
    settings = load_settings(**{"worker": {"data_dir": tmp_path / "data", "app_id": "unit-app"},
                                "topics": {"prefix": PREFIX, "partitions": 2},
                                "model": {"k": 3}, "events": {"dedup_window": 10}, **sections})
    app = create_app(settings, store=store)
    app.outboxes = Outboxes()
    app.pipeline.sender.send_many = app.outboxes.send_many  # type: ignore[method-assign]
    app.pipeline.catalogue_ready.set()  # no broker, so no replica task: the catalogue is what tests put in
    app.pipeline.item_info_ready.set()
    return app


@pytest.fixture
def pipeline(app: StreamrecApp) -> Pipeline:
    pipeline = app.pipeline
    for item_id, score in {"i1": 5.0, "i2": 4.0, "i3": 3.0, "i4": 2.0}.items():
        pipeline.catalog.set(item_id, score, T0_MS)
    return pipeline


class Outbox:
    """Stands in for one output topic: records what the pipeline publishes to it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[tuple[bytes | None, bytes | None]] = []
        self.partitions: list[int | None] = []  # as sent: None lets the partitioner choose
        self.lingered: list[bool] = []  # per send_many call: whether the producer may linger

    @property
    def keys(self) -> list[bytes | None]:
        return [key for key, _ in self.messages]

    @property
    def values(self) -> list[dict]:
        return [json.loads(value) for _, value in self.messages]

    @property
    def item_deltas(self) -> list[tuple[str, dict]]:
        """``(item_id, delta)`` of every batched item-updates record, in the order sent."""
        return [(item_id, delta) for _, value in self.messages
                for item_id, delta in binary_items.as_json_object(value)["items"].items()]


class Outboxes:
    """Stands in for ``Sender.send_many``: records each record in its topic's ``Outbox``, delivered at once."""

    def __init__(self) -> None:
        self.by_topic: dict[str, Outbox] = {}
        self.offsets = itertools.count()

    def box(self, topic: str) -> Outbox:
        return self.by_topic.setdefault(topic, Outbox(topic))

    async def send_many(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None, int | None]],
                        linger: bool = True) -> list[asyncio.Future]:
        box = self.box(topic)
        box.lingered.append(linger)
        deliveries = []
        for key, value, partition in records:
            box.messages.append((key, value))
            box.partitions.append(partition)
            delivered = asyncio.get_running_loop().create_future()
            delivered.set_result(SimpleNamespace(topic=topic, partition=partition, offset=next(self.offsets)))
            deliveries.append(delivered)
        return deliveries


def outbox(topic) -> Outbox:
    """The records the pipeline sent to ``topic`` (a Faust topic of the harness's app)."""
    return topic.app.outboxes.box(topic.get_topic_name())


@pytest.fixture
def recommendations_out(pipeline: Pipeline) -> Outbox:
    return outbox(pipeline.recommendations)


@pytest.fixture
def dead_letters_out(pipeline: Pipeline) -> Outbox:
    return outbox(pipeline.dead_letter)


@pytest.fixture
def item_updates_out(pipeline: Pipeline) -> Outbox:
    return outbox(pipeline.item_updates)


@pytest.fixture
def events_out(pipeline: Pipeline) -> Outbox:
    """Re-published (re-keyed) events."""
    return outbox(pipeline.events)


@pytest.fixture
def requests_out(pipeline: Pipeline) -> Outbox:
    """Re-published (re-keyed) requests."""
    return outbox(pipeline.requests)


@pytest.fixture
def item_state_out(pipeline: Pipeline) -> Outbox:
    return outbox(pipeline.item_state)


@pytest.fixture
def outputs(recommendations_out, dead_letters_out, item_updates_out, events_out, requests_out,
            item_state_out) -> dict[str, Outbox]:
    return {"recommendations": recommendations_out, "dead_letter": dead_letters_out,
            "item_updates": item_updates_out, "events": events_out, "requests": requests_out,
            "item_state": item_state_out}


def counted(pipeline: Pipeline, metric: str, **labels: str) -> float:
    return pipeline.metrics.registry.get_sample_value(metric, labels) or 0.0


def messages_in(pipeline: Pipeline) -> float:
    """Messages handled: counted by outcome, or skipped by a processing error."""
    names = pipeline.names
    return sum(counted(pipeline, name, outcome=outcome)
               for name in ("streamrec_events_in_total", "streamrec_requests_in_total")
               for outcome in ("applied", "duplicate", "rerouted", "invalid", "answered")) + sum(
        counted(pipeline, "streamrec_processing_errors_total", topic=topic) for topic in (names.events, names.requests))


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "the agent did not process the message"
        await asyncio.sleep(0.001)


Scenario = Callable[["Feed"], Awaitable[None]]


class Feed:
    """Puts raw messages into one agent's test context and waits until each is handled."""

    def __init__(self, pipeline: Pipeline, agent) -> None:
        self.pipeline = pipeline
        self.agent = agent

    async def put(self, value: bytes | None, key: bytes | None, **kwargs) -> None:
        """Put one message and wait until the processor has counted it (or the agent crashed)."""
        before = messages_in(self.pipeline)
        # wait=False: Faust's test wrapper signals a value processed from a stream processor,
        # which the events agent's micro-batches never run (they skip the stream's iterator).
        await self.agent.put(value, key=key, wait=False, **kwargs)
        await until(lambda: messages_in(self.pipeline) > before or self.crashed())
        await asyncio.sleep(0.005)  # let the processor finish writing its outputs
        if self.crashed():
            raise self.agent._crash_reason

    async def put_while_busy(self, messages: list[tuple[bytes, bytes, int | None]]) -> list[int]:
        """Put ``(value, key, partition)`` messages while the agent is held on the first one, as a
        busy worker finds events waiting; wait until all are handled; return the batch sizes.

        The first message is a batch of one, the others wait and form the next batches.
        """
        held, sizes = asyncio.Event(), []
        on_events = self.pipeline.on_events

        async def hold(batch):
            sizes.append(len(batch))
            await held.wait()
            await on_events(batch)

        self.pipeline.on_events = hold  # type: ignore[method-assign]
        try:
            before = messages_in(self.pipeline)
            for value, key, partition in messages:
                await self.agent.put(value, key=key, partition=partition, wait=False)
            held.set()
            await until(lambda: messages_in(self.pipeline) >= before + len(messages) or self.crashed())
            await asyncio.sleep(0.005)
        finally:
            del self.pipeline.on_events  # the method again
        if self.crashed():
            raise self.agent._crash_reason
        return sizes

    def crashed(self) -> bool:
        return self.agent._crash_reason is not None


def run_agent(app: StreamrecApp, agent_name: str, scenario: Scenario) -> None:
    async def main() -> None:
        async with app.agents[agent_name].test_context() as agent:
            await scenario(Feed(app.pipeline, agent))

    asyncio.run(main())


def run_events(app: StreamrecApp, scenario: Scenario) -> None:
    run_agent(app, "streamrec.events", scenario)


def event(**fields: object) -> bytes:
    return json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", **fields}).encode()
