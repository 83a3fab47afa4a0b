"""The worker's stream processors: ingest + learn + query per event, items, requests.

Each processor takes a raw message, calls the pure core (``models/``), and
writes the result to a table or topic. Data flow (DESIGN.md):

events (by user) ──► validate, dedup, remember seen ──► recommendations
        │                                   └─► internal.item-updates (by item)
        └─► dead-letter                              │
                                           item popularity table (owner)
                                                     │ coalesced
                                           internal.item-state (compacted)
                                                     │ every worker
                                           popularity replica ──► ranking
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.types import EventT

from streamrec.config import Settings
from streamrec.errors import InvalidRecord
from streamrec.models.history import UserHistory
from streamrec.models.popularity import PopularityRanking, add_event
from streamrec.models.recommender import TrendingRecommender
from streamrec.models.weights import event_weight
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams.records import (
    DeadLetter,
    InvalidRequest,
    ItemState,
    ItemUpdate,
    Recommendation,
    ScoredItem,
    decode_event,
    decode_request,
)
from streamrec.streams.topics import TopicNames

log = logging.getLogger(__name__)

_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                        "key_serializer": "raw", "value_serializer": "raw"}


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return int(time.time() * 1000)


class Pipeline:
    """Topics, tables, model state and processors of one streamrec worker."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.names = TopicNames.for_prefix(settings.topics.prefix)
        self.metrics = WorkerMetrics()
        self.ranking = PopularityRanking(settings.model.popularity_half_life_s,
                                         settings.model.max_items)
        self.recommender = TrendingRecommender(self.ranking)
        n = settings.topics.partitions
        self.events = app.topic(self.names.events, partitions=n, **_RAW)
        self.requests = app.topic(self.names.requests, partitions=n, **_RAW)
        self.recommendations = app.topic(self.names.recommendations, partitions=n, **_RAW)
        self.dead_letter = app.topic(self.names.dead_letter, partitions=n, **_RAW)
        self.item_updates = app.topic(self.names.item_updates, partitions=n, **_RAW)
        self.item_state = app.topic(self.names.item_state, partitions=n, **_RAW)
        # bytes keys use the raw serializer, so a table key partitions exactly
        # like the topic key (HTTP routing to the owner relies on it).
        table_options: dict[str, Any] = {"partitions": n, "key_type": bytes, "default": None}
        self.users = app.Table("users", **table_options)
        self.item_popularity = app.Table("item_popularity", **table_options)
        # Coalescing buffers, drained every model.item_publish_interval_ms and before
        # every offset commit, so internal traffic grows with distinct items changed,
        # not with events. Both are bounded by the catalogue size.
        self._pending_updates: dict[str, tuple[float, int]] = {}
        self._dirty_items: dict[str, tuple[float, int]] = {}
        self.metrics.assigned_partitions.set_function(self.owned_event_partitions)
        self.item_popularity.on_recover(self.republish_owned_items)

    def owned_event_partitions(self) -> int:
        """How many events partitions this worker owns now (0 while rebalancing)."""
        if self.app.rebalancing:
            return 0
        try:
            assignment = self.app.consumer.assignment()
        except ConsumerNotStarted:
            return 0
        return sum(1 for tp in assignment if tp.topic == self.names.events)

    # -- events ---------------------------------------------------------------

    async def on_event(self, event: EventT) -> None:
        """Validate, dedup and apply one event, then push the user's new top-K."""
        started = time.perf_counter()
        message = event.message
        try:
            record = decode_event(event.value, self.settings.events, now_ms())
        except InvalidRecord as exc:
            self.metrics.events_in.labels("invalid").inc()
            await self.send_dead_letter(exc.reason, event)
            return
        if event.key != record.user_id.encode():
            # Keyed by something else: re-publish keyed by user so it lands on the
            # partition that owns this user's state (DESIGN.md: "route by user_id").
            self.metrics.events_in.labels("rerouted").inc()
            await self.events.send(key=record.user_id.encode(), value=event.value)
            return
        history = UserHistory.from_dict(self.users.get(event.key))
        if history.is_duplicate(record.event_id):
            self.metrics.events_in.labels("duplicate").inc()
            return
        model = self.settings.model
        history.record(record.item_id, record.event_id, model.history_size,
                       self.settings.events.dedup_window)
        self.users[event.key] = history.to_dict()
        event_ts = record.ts_ms if record.ts_ms is not None else int(message.timestamp * 1000)
        weight = event_weight(record.type, record.value, self.settings.events.types,
                              self.settings.events.value_weighted_types)
        if weight > 0:
            pending = self._pending_updates.get(record.item_id, (0.0, event_ts))
            self._pending_updates[record.item_id] = add_event(
                *pending, weight, event_ts, model.popularity_half_life_s)
        self.metrics.events_in.labels("applied").inc()
        await self.emit(self.recommend(record.user_id, model.k, trigger="event", history=history,
                                       event_ts=event_ts, event_id=record.event_id))
        self.metrics.processing_seconds.labels("events").observe(time.perf_counter() - started)

    # -- requests -------------------------------------------------------------

    async def on_request(self, event: EventT) -> None:
        """Answer one request with exactly one recommendation carrying its request_id."""
        started = time.perf_counter()
        try:
            request = decode_request(event.value, self.settings.events, self.settings.model.max_k)
        except InvalidRecord as exc:
            self.metrics.requests_in.labels("invalid").inc()
            await self.send_dead_letter(exc.reason, event)
            if isinstance(exc, InvalidRequest):  # answerable: say why, so nobody waits in vain
                await self.emit(Recommendation(
                    user_id=exc.user_id, items=[], trigger="request", request_id=exc.request_id,
                    model_version=self.recommender.model_version, source="error",
                    emitted_ts=now_ms(), error=exc.reason))
            return
        if event.key != request.user_id.encode():
            self.metrics.requests_in.labels("rerouted").inc()
            await self.requests.send(key=request.user_id.encode(), value=event.value)
            return
        self.metrics.requests_in.labels("answered").inc()
        await self.emit(self.recommend(request.user_id, request.k or self.settings.model.k,
                                       trigger="request", request_id=request.request_id,
                                       exclude=request.exclude))
        self.metrics.processing_seconds.labels("requests").observe(time.perf_counter() - started)

    def recommend(self, user_id: str, k: int, trigger: str, exclude: tuple[str, ...] = (),
                  history: UserHistory | None = None, **fields: Any) -> Recommendation:
        """The user's top-K now, from local state (call it on the user's partition owner).

        ``history`` saves a table read when the caller already holds the user's state.
        """
        if history is None:
            history = UserHistory.from_dict(self.users.get(user_id.encode()))
        ranked = self.recommender.recommend(history, k, exclude)
        return Recommendation(
            user_id=user_id,
            items=[ScoredItem(item_id, round(score, 6)) for item_id, score in ranked],
            trigger=trigger, model_version=self.recommender.model_version,
            source=self.recommender.source, emitted_ts=now_ms(), **fields,
        )

    async def emit(self, recommendation: Recommendation) -> None:
        """Publish a recommendation keyed by its user."""
        self.recommendations.send_soon(key=recommendation.user_id.encode(),
                                        value=recommendation.to_json())
        self.metrics.recommendations_out.labels(recommendation.trigger).inc()

    async def guarded(self, handler: Callable[[EventT], Awaitable[None]], event: EventT) -> None:
        """Run a processor; a bug on one message dead-letters it instead of killing the agent."""
        try:
            await handler(event)
        except Exception as exc:  # noqa: BLE001 - the worker must outlive any single message
            log.exception("failed to process %s[%d]@%d", event.message.topic,
                          event.message.partition, event.message.offset)
            self.metrics.processing_errors.labels(event.message.topic).inc()
            await self.send_dead_letter(
                f"internal error while processing this message ({exc!r}); it was skipped. "
                "This is a streamrec bug: please report it with this record", event)

    async def send_dead_letter(self, reason: str, event: EventT) -> None:
        """Send the original message and the reason to the dead-letter topic."""
        message = event.message
        letter = DeadLetter.of(reason, message.topic, message.partition, message.offset, event.value)
        await self.dead_letter.send(key=event.key, value=letter.to_json())
        self.metrics.dead_lettered.labels(message.topic).inc()

    # -- items ----------------------------------------------------------------

    async def on_item_update(self, event: EventT) -> None:
        """Apply an item-side update on the item's owner; publish it coalesced."""
        try:
            item_key = event.key or b""
            item_id = item_key.decode()
            update = ItemUpdate.from_json(event.value)
        except UnicodeDecodeError:
            await self.send_dead_letter("internal item update has a key that is not UTF-8", event)
            return
        except InvalidRecord as exc:
            await self.send_dead_letter(f"internal item update is malformed: {exc.reason}", event)
            return
        score, score_ts = self.item_popularity.get(item_key) or (0.0, update.ts_ms)
        updated = add_event(score, score_ts, update.weight, update.ts_ms,
                            self.settings.model.popularity_half_life_s)
        self.item_popularity[item_key] = list(updated)
        self._dirty_items[item_id] = updated

    async def publish_coalesced(self) -> None:
        """Send the merged item-side updates to their owners and the changed item states to all.

        Decayed weights add linearly, so one merged update per item per interval
        gives the owner exactly the score that one update per event would.
        """
        pending, self._pending_updates = self._pending_updates, {}
        for item_id, (weight, ts) in pending.items():
            await self.item_updates.send(key=item_id.encode(), value=ItemUpdate(weight, ts).to_json())
        dirty, self._dirty_items = self._dirty_items, {}
        for item_id, (score, ts) in dirty.items():
            await self.item_state.send(key=item_id.encode(),
                                       value=ItemState(item_id, score, ts).to_json())

    async def republish_owned_items(self) -> None:
        """After a rebalance, queue every owned item for publication.

        Item states changed just before a crash may never have reached the
        replicated topic; republishing what the recovered table holds fixes
        every worker's replica (cost: one record per owned item per rebalance).
        """
        for key, (score, ts) in self.item_popularity.items():
            self._dirty_items[key.decode()] = (float(score), int(ts))

    def apply_item_state(self, key: bytes | None, value: bytes | None) -> None:
        """Update this worker's replica from one item-state record."""
        if key is None or value is None:
            return
        state = ItemState.from_json(value)
        self.ranking.set(state.item_id, state.popularity, state.ts_ms)
        self.metrics.catalog_items.set(len(self.ranking))
