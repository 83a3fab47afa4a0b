"""The Faust app factory: one worker's topics, tables, agents, timers and web views."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import cached_property
from typing import TypeVar

import faust
from faust.types import EventT, ProducerT, StreamT
from mode.utils.futures import StampedeWrapper

from streamrec.config import Settings
from streamrec.streams.collector import PauseTimer, freeze_long_lived
from streamrec.streams.memory import release_free_heap
from streamrec.streams.pipeline import Pipeline, behind
from streamrec.streams.replica import RARELY_WRITTEN_FETCH_WAIT_MS, replicate_topic
from streamrec.streams.rocksdb_store import STORE_URL
from streamrec.streams.topics import ssl_context
from streamrec.streams.transport import ConsumerTuning, Transport
from streamrec.streams.web import register_views

AppT = TypeVar("AppT", bound=faust.App)

_STOP_REBUILD_WAIT_S = 5.0  # well inside `docker stop`'s default 10 s grace period


class TunedApp(faust.App):
    """A Faust app whose worker consumer is tuned for latency (see ``transport.py``)."""

    consumer_tuning: ConsumerTuning = ConsumerTuning()
    #: Awaited before every offset commit (see ``transport.Consumer``).
    before_commit: Sequence[Callable[[], Awaitable[None]]] = ()

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)

    async def maybe_start_producer(self) -> ProducerT:
        """Return the started producer; Faust calls this before *every* send.

        Faust's version is wrapped in mode's ``@stampede``, which yields to the
        event loop three times per call, so the task draining the producer buffer
        sent one message every three loop turns and fell behind at a few hundred
        events/s ("producer buffer full"). The started case needs no lock.
        """
        producer = self.producer
        if producer.started and not self.in_transaction:
            return producer
        return await self._start_producer_once()

    @cached_property
    def _start_producer_once(self) -> StampedeWrapper:
        # Faust's original, stampede-protected, for the rare not-yet-started case.
        return StampedeWrapper(faust.App.maybe_start_producer.__wrapped__, self)

    async def long_lived_state_loaded(self) -> None:
        """Return once the app holds the state it keeps for its lifetime (see :func:`freeze_when_loaded`)."""


async def freeze_when_loaded(app: TunedApp) -> None:
    """Exempt the app's long-lived objects from the garbage collector once they are loaded (``collector.py``)."""
    await app.long_lived_state_loaded()
    started = time.perf_counter()
    frozen = freeze_long_lived()  # on the loop: one full collection, once
    logging.getLogger(__name__).info("%d long-lived objects exempt from garbage collection (%.0f ms)",
                                     frozen, (time.perf_counter() - started) * 1000)


class StreamrecApp(TunedApp):
    """The worker's app: a :class:`TunedApp` with streamrec's pipeline."""

    pipeline: Pipeline

    async def long_lived_state_loaded(self) -> None:
        """Return once the item replicas hold the item state present at start."""
        await self.pipeline.ready()

    async def on_start(self) -> None:
        """Time the garbage collector's pauses (``streamrec_gc_pause_seconds``) while the app runs."""
        await super().on_start()
        self._gc_pauses.start()

    @cached_property
    def _gc_pauses(self) -> PauseTimer:
        return PauseTimer(self.pipeline.metrics.gc_pause)

    async def on_stop(self) -> None:
        """Snapshot the index, giving a running rebuild a few seconds to land first.

        The snapshot holds the delta too, so it is complete either way; a long rebuild is
        left behind (the next start folds the delta in again) rather than holding up a stop
        that a supervisor would end with SIGKILL, losing the snapshot.
        """
        await asyncio.to_thread(self.pipeline.index.wait_for_rebuild, _STOP_REBUILD_WAIT_S)
        try:
            await self.pipeline.save_snapshot()
        except OSError as exc:  # a full or read-only disk must not turn a clean stop into a crash
            logging.getLogger(__name__).warning("index snapshot not saved: %s", exc)
        self._gc_pauses.stop()
        await super().on_stop()


def _credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    kafka = settings.kafka
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        return faust.SASLCredentials(username=kafka.sasl_username, password=password,
                                     mechanism=kafka.sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def tuned_app(settings: Settings, app_class: type[AppT], store: str) -> AppT:
    """An app of ``app_class`` configured from ``settings`` (broker, group, web server, timeouts, tuning)."""
    kafka, worker = settings.kafka, settings.worker
    app = app_class(
        worker.app_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers],
        broker_credentials=_credentials(settings),
        store=store,
        datadir=str(worker.data_dir),
        web_bind=worker.web_host,
        web_host=worker.web_host,
        web_port=worker.web_port,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        broker_session_timeout=kafka.session_timeout_s,
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_request_timeout=max(30.0, kafka.session_timeout_s),
        producer_linger=kafka.producer_linger_ms / 1000.0,
        producer_max_batch_size=kafka.producer_max_batch_bytes,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
    )
    app.consumer_tuning = ConsumerTuning(fetch_max_wait_ms=kafka.fetch_max_wait_ms,
                                         correct_end_offsets=kafka.correct_end_offsets)
    if worker.gc_freeze:
        app.task(freeze_when_loaded)
    return app


def create_app(settings: Settings, store: str = STORE_URL) -> StreamrecApp:
    """Build the worker's Faust app from ``settings`` (nothing connects until it starts).

    ``store`` is the Faust table store: RocksDB with one block cache per worker
    (:mod:`~streamrec.streams.rocksdb_store`) in workers, ``streamrec-memory://``
    (:mod:`~streamrec.streams.memory_store`) in unit tests: the pipeline reads and writes
    its tables through their ``get_in``/``set_in``.
    """
    app = tuned_app(settings, StreamrecApp, store)
    app.pipeline = pipeline = Pipeline(app, settings)
    # Coalesced item updates go out before the offsets of their events are committed:
    # a crash then replays those events instead of losing their popularity.
    app.before_commit = [pipeline.publish_coalesced]
    _register_processors(app, pipeline)
    register_views(app, pipeline)
    return app


async def micro_batches(stream: StreamT, max_events: int, max_wait_s: float,
                        more_coming: Callable[[EventT], bool]) -> AsyncIterator[list[EventT]]:
    """The stream's events in batches of at most ``max_events``, in order.

    A batch takes every event waiting. It ends there unless ``more_coming(last event)`` says
    the broker already holds more (the worker is behind): then it waits for them, until
    ``max_wait_s`` after it began. A worker that keeps up never waits: one event alone is a
    batch of one. Each event is acked after its whole batch is processed, so its offset is
    committed only then (at-least-once, as for one event at a time).

    The events come straight from the queue Faust's consumer fills, not through the stream's
    iterator: that costs a turn of the event loop, sensor calls and three async generators per
    event (measured at 3,000 events/s: the worker's CPU outside its own stages fell from 124 and
    145 to 104 and 122 µs per event, two runs each). What the iterator does that matters is kept:
    events of an earlier consumer generation (fetched before a rebalance) are dropped unacked,
    and the others are tracked, so a rebalance or a stop waits for their acks.
    """
    app = stream.app
    queue = aiter(stream.channel).queue  # iterating the channel subscribes to its topic, as the stream does
    unacked = app.consumer._unacked_messages  # what the stream's iterator adds each message to
    while True:
        batch = [await queue.get()]
        deadline = time.monotonic() + max_wait_s
        while len(batch) < max_events:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not more_coming(batch[-1]):
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))  # a cancelled get loses nothing
            except TimeoutError:
                break
        current = [event for event in batch if _current(app, event, unacked)]
        if not current:
            continue
        try:
            yield current
        finally:
            for event in current:
                event.ack()


def _current(app: faust.App, event: EventT, unacked: set) -> bool:
    """Whether ``event`` was fetched in the consumer's current generation; if so, track it until acked."""
    message = event.message
    if message.generation_id != app.consumer_generation_id or not app.flow_control.is_active():
        return False
    if not message.tracked:
        message.tracked = True
        unacked.add(message)
    return True


def _register_processors(app: StreamrecApp, pipeline: Pipeline) -> None:
    @app.agent(pipeline.events, name="streamrec.events")
    async def process_events(stream: StreamT) -> None:
        worker = pipeline.settings.worker
        async for batch in micro_batches(stream, worker.max_batch_events, worker.max_batch_wait_ms / 1000,
                                         lambda event: behind(app, event)):
            await pipeline.guarded_batch(pipeline.on_events, batch)

    @app.agent(pipeline.requests, name="streamrec.requests")
    async def process_requests(stream: StreamT) -> None:
        async for event in stream.events():
            await pipeline.guarded(pipeline.on_request, event)

    @app.agent(pipeline.item_updates, name="streamrec.items")
    async def process_item_updates(stream: StreamT) -> None:
        async for event in stream.events():
            await pipeline.guarded(pipeline.on_item_updates, event)

    @app.agent(pipeline.item_info, name="streamrec.item-info")
    async def check_item_info(stream: StreamT) -> None:
        async for event in stream.events():
            await pipeline.guarded(pipeline.check_item_info, event)

    @app.timer(pipeline.settings.model.item_publish_interval_ms / 1000.0)
    async def publish_coalesced() -> None:
        await pipeline.publish_coalesced()

    if pipeline.settings.worker.heap_trim_interval_s > 0:
        @app.timer(pipeline.settings.worker.heap_trim_interval_s)
        async def trim_heap() -> None:
            await asyncio.to_thread(release_free_heap)

    if pipeline.settings.index.snapshot_interval_s > 0:
        @app.timer(pipeline.settings.index.snapshot_interval_s)
        async def snapshot_index() -> None:
            await pipeline.save_snapshot()

    @app.task
    async def replicate_items() -> None:
        await pipeline.restore_snapshot()  # first: the replicas then resume where it was taken
        kafka, names, offsets = pipeline.settings.kafka, pipeline.names, pipeline.replica_offsets
        await asyncio.gather(
            replicate_topic(kafka, names.items, pipeline.apply_item_info, pipeline.item_info_ready,
                            offsets.setdefault(names.items, {}), RARELY_WRITTEN_FETCH_WAIT_MS),
            pipeline.follow_models(),
            # Owners publish at most once per model.item_publish_interval_ms, so waiting as long for
            # the next records adds at most that to freshness; a 10 ms wait polled 5x as often for nothing.
            replicate_topic(kafka, names.item_state, pipeline.apply_item_state, pipeline.catalogue_ready,
                            offsets.setdefault(names.item_state, {}),
                            max(kafka.fetch_max_wait_ms, pipeline.settings.model.item_publish_interval_ms)))
