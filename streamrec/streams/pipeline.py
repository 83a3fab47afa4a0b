"""The worker's stream processors: ingest + learn + query per event, items, requests.

Each processor takes a raw message, calls the pure core (``models/``), and
writes the result to a table or topic. Data flow (DESIGN.md):

events (by user) ──► validate, dedup, learn (users table) ──► recommend ──► recommendations
        │                          └─► item deltas, coalesced ─► internal.item-updates
        └─► dead-letter                          (one record per partition of the items' ids)
                                                                           │
                                                 items table (owner): popularity, vector, co-visits
                                                                           │ its changelog is
                                                 internal.item-state (compacted, read by every worker)
                                                                           │
                                                 item catalogue replica ──► learn and recommend
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
import numpy as np
from faust.exceptions import ConsumerNotStarted
from faust.types import EventT

from streamrec.config import Settings
from streamrec.errors import InvalidRecord
from streamrec.index.live_index import LiveIndex
from streamrec.models.ab import arm, list_gain
from streamrec.models.content import ContentMap, content_features
from streamrec.models.items import ItemDelta, OwnedItem
from streamrec.models.online_recommender import MODEL_VERSION, Ranked, learn, recommend_many
from streamrec.models.user_state import UserState
from streamrec.models.weights import event_weight
from streamrec.streams.memory import memory_parts
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams import snapshot
from streamrec.streams.records import (
    DeadLetter,
    Event as EventRecord,
    InvalidRequest,
    Recommendation,
    decode_event,
    decode_user_state,
    decode_item_info,
    decode_item_state,
    ITEM_UPDATES_PER_RECORD,
    decode_item_updates,
    decode_request,
    encode_item_state,
    encode_item_updates,
    encode_user_state,
)
from streamrec.streams.sends import Sender, stored
from streamrec.streams.clients import TopicMissing
from streamrec.streams.model_topic import MalformedChunk, SnapshotAssembler
from streamrec.streams.replica import RARELY_WRITTEN_FETCH_WAIT_MS, replicate_topic
from streamrec.streams.snapshot import ItemReplicas, Offsets
from streamrec.streams.topics import RAW_BYTES, TopicNames, key_partition

if TYPE_CHECKING:  # the sequence model's query code is imported only once a snapshot arrives
    from streamrec.models.sequence_query import SequenceQuery

log = logging.getLogger(__name__)


def load_sequence_query(data: bytes) -> SequenceQuery:
    """A checked snapshot from its bytes, ready for queries (raises ``InvalidSnapshot``, a ValueError).

    numpy alone: a worker never imports torch (it would raise its RSS by about 190 MB).
    Queries are numpy matrix products, whose threads ``OPENBLAS_NUM_THREADS`` sets.
    """
    from streamrec.models.sequence_query import SequenceQuery
    from streamrec.models.sequence_snapshot import SequenceSnapshot

    return SequenceQuery(SequenceSnapshot.from_bytes(data))


def behind(app: faust.App, event: EventT) -> bool:
    """Whether the broker held more records of the event's partition when it was fetched."""
    tp = event.message.tp
    try:
        return app.consumer.highwater(tp) > event.message.offset + 1
    except Exception:  # noqa: BLE001 - no consumer, or the partition is no longer assigned
        return False


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
        self.config = settings.model.recommender(settings.events.dedup_window,
                                                 sequence_weight=settings.sequence.weight)
        # A/B test: arm b's configuration, for a stable share of users (None: no test running).
        self.config_b = settings.ab.arm_b(self.config) if settings.ab.share > 0 else None
        self.fuses_sequence = any(config.fusion.sequence > 0 for config in (self.config, self.config_b) if config)
        self.catalog = self.config.new_catalog()  # this worker's replica of every item
        self.data_dir = Path(settings.worker.data_dir)
        # The replica's vectors, for candidate search; restore_snapshot() swaps in the last snapshot.
        self.index = LiveIndex(settings.index.config(self.config.mf.dim))
        # Lists search the index from this catalogue size on (below, they score every item):
        # smaller catalogues keep their changes in its delta, unbuilt (see apply_item_state).
        self.index_searched_from = min(config.index_min_items for config in (self.config, self.config_b) if config)
        self.rng = random.Random(self.config.mf.seed)  # negative sampling
        # Set once the replica has read the item-state present at start: until then a
        # (re)started worker would learn and answer from an empty catalogue.
        self.catalogue_ready = asyncio.Event()
        # What applications say about items on streamrec.items (replicated by every worker).
        self.item_info_ready = asyncio.Event()
        self.unavailable: set[str] = set()
        self.item_categories: dict[str, frozenset[str]] = {}
        # Content cold start: features of items announced with content, and the map from
        # them to embeddings, learnt from the item vectors this worker replicates.
        self.content = ContentMap(self.config.mf.dim)
        self.item_features: dict[str, dict[int, float]] = {}
        self.replica_offsets: Offsets = {}  # where the replicas are in the item topics
        # The sequence model served now (None until the trainer's first snapshot arrives), the
        # newest complete snapshot read from the models topic, and whether it is still to load.
        self.sequence: SequenceQuery | None = None
        self.snapshot_chunks = SnapshotAssembler()
        self.newest_snapshot: tuple[str, bytes] | None = None
        self.snapshot_arrived = asyncio.Event()
        self.models_ready = asyncio.Event()
        n = settings.topics.partitions
        self.events = app.topic(self.names.events, partitions=n, **RAW_BYTES)
        self.requests = app.topic(self.names.requests, partitions=n, **RAW_BYTES)
        self.recommendations = app.topic(self.names.recommendations, partitions=n, **RAW_BYTES)
        self.dead_letter = app.topic(self.names.dead_letter, partitions=n, **RAW_BYTES)
        self.item_updates = app.topic(self.names.item_updates, partitions=n, **RAW_BYTES)
        self.item_state = app.topic(self.names.item_state, partitions=n, compacting=True, **RAW_BYTES)
        self.item_info = app.topic(self.names.items, partitions=n, **RAW_BYTES)
        # bytes keys use the raw serializer, so a table key partitions exactly
        # like the topic key (HTTP routing to the owner relies on it).
        table_options: dict[str, Any] = {"partitions": n, "key_type": bytes, "default": None,
                                         "options": settings.worker.rocksdb_options()}
        table_options["value_type"] = bytes  # encoded here (records.py), so one bytes string is stored and logged
        self.users = app.Table("users", **table_options)
        # The owners' items, stored as published: the item-state topic is this table's
        # changelog, so one record both persists an item and publishes it to every replica.
        self.items = app.Table("items", **table_options, changelog_topic=self.item_state)
        self.sender = Sender(app)  # every record the pipeline writes, and both tables' writes
        # Item deltas, coalesced until the next publication (every model.item_publish_interval_ms
        # and before every offset commit), so internal traffic grows with distinct items changed,
        # not with events. Bounded by the catalogue size.
        self._pending_updates: dict[str, ItemDelta] = {}
        # The owner's most recently updated items, decoded (oldest first; bounded by
        # worker.owned_items_cached). Emptied on every rebalance: while another worker owns
        # an item's partition, only the table (recovered from the changelog) is current.
        self._owned: dict[str, OwnedItem] = {}
        app.on_partitions_revoked.connect(self._forget_owned)
        app.on_partitions_assigned.connect(self._forget_owned)
        self.metrics.assigned_partitions.set_function(self.owned_event_partitions)
        self.metrics.index_items.set_function(lambda: len(self.index))
        self.metrics.catalog_items.set_function(lambda: len(self.catalog))
        self.metrics.catalog_neighbours.set_function(lambda: self.catalog.neighbour_pairs)
        self.metrics.catalog_pending_steps.set_function(lambda: self.catalog.pending_steps)
        self.metrics.index_delta_items.set_function(lambda: self.index.delta_items)
        self.metrics.index_rebuilding.set_function(lambda: self.index.rebuilding)
        self.metrics.watch_memory(lambda: memory_parts((self.users, self.items)))

    def apply_item_info(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        """Update this worker's view of one item from ``streamrec.items``: availability, categories."""
        if key is None or value is None:
            return
        info = decode_item_info(value, self.settings.events)
        if info.categories:
            self.item_categories[info.item_id] = info.categories
        else:
            self.item_categories.pop(info.item_id, None)
        features = content_features(info.categories, info.title, info.text, self.content.buckets)
        if features:
            self.item_features[info.item_id] = features
        else:
            self.item_features.pop(info.item_id, None)
        if features and info.available and self.catalog.row(info.item_id) is None:
            # New, never chosen: it enters with the vector its content predicts.
            vector = self.content.vector(features)
            self.catalog.upsert(info.item_id, OwnedItem(vector=vector).published(self.config.items))
            self.index.upsert(info.item_id, vector)
        if not info.available:
            self.unavailable.add(info.item_id)
            self.index.remove(info.item_id)  # out of every list from now on
        elif info.item_id in self.unavailable:
            self.unavailable.discard(info.item_id)
            vector = self.catalog.vector(info.item_id)
            if vector is not None:
                self.index.upsert(info.item_id, vector)

    async def check_item_info(self, event: EventT) -> None:
        """Dead-letter a malformed ``streamrec.items`` record (read once, by the partition's owner).

        Every worker's replica applies the valid ones (:meth:`apply_item_info`) and skips the rest.
        """
        try:
            decode_item_info(event.value, self.settings.events)
        except InvalidRecord as exc:
            await self.send_dead_letter(exc.reason, event)

    def item_replicas(self) -> ItemReplicas:
        """This worker's item replicas, by reference (what a snapshot freezes)."""
        return ItemReplicas(self.catalog, self.content, self.unavailable, self.item_categories,
                            self.item_features, self.replica_offsets)

    async def restore_snapshot(self) -> None:
        """Load the index and item replicas the last run left (before the item topics are read).

        With both, the replicas resume the item topics where the snapshot was taken; with the
        index alone they re-read the topics on top of it (unchanged vectors are no-ops).
        """
        index, replicas = await asyncio.to_thread(snapshot.load, self.data_dir, self.index.config,
                                                  self.config.new_catalog())
        if replicas is not None:
            self.catalog, self.content = replicas.catalog, replicas.content
            self.unavailable, self.item_categories = replicas.unavailable, replicas.categories
            self.item_features, self.replica_offsets = replicas.features, replicas.offsets
        if index is not None:
            self.index = index
            if len(self.catalog) >= self.index_searched_from:  # a delta saved while a rebuild was cut short
                self.index.maybe_rebuild(background=True)

    async def save_snapshot(self) -> None:
        """Snapshot the index and the item replicas; the files are written in a thread.

        The replicas are copied on the event loop, between two applied records, so they
        match their offsets (a pause of a few hundred ms per 100k items).
        """
        frozen = snapshot.freeze(self.item_replicas())
        await asyncio.to_thread(snapshot.save, self.data_dir, self.index, frozen, {"saved_ms": now_ms()})

    def owned_event_partitions(self) -> int:
        """How many events partitions this worker owns now (0 while rebalancing)."""
        if self.app.rebalancing:
            return 0
        try:
            assignment = self.app.consumer.assignment()
        except ConsumerNotStarted:
            return 0
        return sum(1 for tp in assignment if tp.topic == self.names.events)

    async def ready(self) -> None:
        """Wait until the replicas hold the item state and item info present at start."""
        await self.catalogue_ready.wait()
        await self.item_info_ready.wait()

    # -- events ---------------------------------------------------------------

    async def on_events(self, batch: Sequence[EventT]) -> None:
        """Validate, dedup and learn a micro-batch of events in order, then push one top-K per applied event.

        Each user's state is read once and written once per batch, and the batch's lists are
        scored together (see ``recommend_many``).
        Every list is the one the user would get with the events processed one by one.
        """
        await self.ready()
        started = time.perf_counter()
        watch = self.metrics.stopwatch()
        now = now_ms()
        states: dict[bytes, tuple[UserState, EventT]] = {}  # as after the user's last applied event
        applied: list[tuple[EventT, EventRecord, int, UserState]] = []  # with event time and the state its list answers
        for event in batch:
            try:
                record = decode_event(event.value, self.settings.events, now)
            except InvalidRecord as exc:
                self.metrics.events_in.labels("invalid").inc()
                await self.send_dead_letter(exc.reason, event)
                continue
            if event.key != record.user_id.encode():
                # Keyed by something else: re-publish keyed by user so it lands on the
                # partition that owns this user's state (DESIGN.md: "route by user_id").
                self.metrics.events_in.labels("rerouted").inc()
                await self.sender.send(self.names.events, record.user_id.encode(), event.value)
                continue
            watch.lap("decode")
            known = states.get(event.key)
            if known is None:
                state = decode_user_state(stored(self.users, event.key, event.message.partition))
            else:
                state = known[0]
            watch.lap("state")
            if state.is_duplicate(record.event_id):
                self.metrics.events_in.labels("duplicate").inc()
                continue
            event_ts = record.ts_ms if record.ts_ms is not None else int(event.message.timestamp * 1000)
            self.metrics.event_age.observe(max(now - event_ts, 0) / 1000)
            weight = event_weight(record.type, record.value, self.settings.events.types,
                                  self.settings.events.value_weighted_types)
            deltas = learn(record.user_id, state, record.item_id, record.event_id, weight, event_ts,
                           self.catalog, self.config, self.rng)
            for item_id, delta in deltas.items():
                pending = self._pending_updates.get(item_id)
                if pending is None:
                    self._pending_updates[item_id] = delta
                else:
                    pending.merge(delta, self.config.half_life_s)
            states[event.key] = (state, event)
            # What this event's list answers: the state now (a later event of the batch changes it).
            applied.append((event, record, event_ts, UserState(list(state.seen), [], state.n_events, state.vector, state.shown)))
            watch.lap("learn")
        answering = [answered for *_, answered in applied]
        lists = self.rank([record.user_id for _, record, _, _ in applied], answering, self.settings.model.k)
        recommendations: list[Recommendation] = []
        shown_now: dict[bytes, list[str]] = {}  # lists pushed in this batch, by user (A/B scoring)
        for (event, record, event_ts, answered), (ranked, group, version) in zip(applied, lists, strict=True):
            recommendation = self.recommendation(record.user_id, answered, ranked, group, version, trigger="event",
                                                 event_ts=event_ts, event_id=record.event_id)
            if group is not None:
                self.score_arm(group, shown_now.get(event.key, answered.shown), record.item_id)
                shown_now[event.key] = states[event.key][0].shown = [item.item_id for item in ranked]
            recommendations.append(recommendation)
        watch.lap("recommend")
        # stored and logged in the user's partition
        await self.sender.store(self.users, [(event, key, encode_user_state(state)) for key, (state, event) in states.items()])
        self.metrics.events_in.labels("applied").inc(len(applied))
        watch.lap("store")
        await self.emit(recommendations, batch[-1])
        watch.stop("emit")
        self.metrics.processing_seconds.labels("events").observe(time.perf_counter() - started)
        self.metrics.batch_events.observe(len(batch))

    def score_arm(self, arm: str, shown: list[str], chosen: str) -> None:
        """Count, for the A/B metrics, whether the list last shown to a user held the item they chose next."""
        if not shown:
            return  # nothing shown after an earlier event: a new user, or one from before the test
        self.metrics.ab_events.labels(arm).inc()
        gain = list_gain(shown, chosen)
        if gain is not None:
            self.metrics.ab_hits.labels(arm).inc()
            self.metrics.ab_ndcg.labels(arm).inc(gain)

    # -- requests -------------------------------------------------------------

    async def on_request(self, event: EventT) -> None:
        """Answer one request with exactly one recommendation carrying its request_id."""
        await self.ready()
        started = time.perf_counter()
        try:
            request = decode_request(event.value, self.settings.events, self.settings.model.max_k)
        except InvalidRecord as exc:
            self.metrics.requests_in.labels("invalid").inc()
            await self.send_dead_letter(exc.reason, event)
            if isinstance(exc, InvalidRequest):  # answerable: say why, so nobody waits in vain
                await self.emit([Recommendation(
                    user_id=exc.user_id, items=[], trigger="request", request_id=exc.request_id,
                    model_version=MODEL_VERSION, source="error",
                    emitted_ts=now_ms(), error=exc.reason)], event)
            return
        if event.key != request.user_id.encode():
            self.metrics.requests_in.labels("rerouted").inc()
            await self.sender.send(self.names.requests, request.user_id.encode(), event.value)
            return
        self.metrics.requests_in.labels("answered").inc()
        await self.emit([self.recommend(request.user_id, request.k or self.settings.model.k,
                                        trigger="request", request_id=request.request_id,
                                        exclude=request.exclude, categories=request.filters.get("categories"))],
                        event)
        self.metrics.processing_seconds.labels("requests").observe(time.perf_counter() - started)

    def recommend(self, user_id: str, k: int, trigger: str, exclude: tuple[str, ...] = (),
                  categories: list[str] | None = None, **fields: Any) -> Recommendation:
        """The user's top-K now, from local state (call it on the user's partition owner).

        Unavailable items never appear; ``categories`` keeps items in any of them.
        """
        state = decode_user_state(stored(self.users, user_id.encode()))
        only = None
        if categories:
            wanted = set(categories)
            only = [item for item, tags in self.item_categories.items() if tags & wanted]
        [(ranked, group, version)] = self.rank([user_id], [state], k, exclude, only)
        return self.recommendation(user_id, state, ranked, group, version, trigger, **fields)

    def rank(self, user_ids: Sequence[str], states: Sequence[UserState], k: int, exclude: tuple[str, ...] = (),
             only: list[str] | None = None) -> list[tuple[list[Ranked], str | None, str]]:
        """Each user's top ``k`` with their A/B arm (``None``: no test running) and the model
        version that ranked it, the users of each arm scored together (``recommend_many``)."""
        if self.unavailable:
            exclude = (*exclude, *self.unavailable)
        sequences = self.sequence_scores(states)
        version = MODEL_VERSION if self.sequence is None else f"{MODEL_VERSION}+{self.sequence.version}"
        groups = [None] * len(user_ids) if self.config_b is None else \
            [arm(user_id, self.settings.ab.share, self.settings.ab.salt) for user_id in user_ids]
        ranked: list[tuple[list[Ranked], str | None, str]] = [([], None, MODEL_VERSION)] * len(user_ids)
        for group in dict.fromkeys(groups):
            config = self.config_b if group == "b" else self.config
            members = [n for n, other in enumerate(groups) if other == group]
            fused = [sequences[n] if config.fusion.sequence > 0 else None for n in members]  # else: this arm fuses none
            lists = recommend_many([states[n] for n in members], self.catalog, k, config, exclude, self.index, only,
                                   fused)
            for n, items, scores in zip(members, lists, fused, strict=True):
                ranked[n] = (items, group, MODEL_VERSION if scores is None else version)
        return ranked

    def recommendation(self, user_id: str, state: UserState, ranked: list[Ranked], group: str | None, version: str,
                       trigger: str, **fields: Any) -> Recommendation:
        """A ranked list as the recommendation pushed for ``user_id``."""
        return Recommendation(user_id=user_id, items=ranked, trigger=trigger, model_version=version,
                              source="trending" if state.vector is None else "online", emitted_ts=now_ms(),
                              arm=group, **fields)

    def sequence_scores(self, states: Sequence[UserState]) -> list[np.ndarray | None]:
        """The served sequence model's scores for each user, all in one pass (``None``: no
        snapshot served, no arm fuses one, or a user without history)."""
        sequence = self.sequence
        wanted = [n for n, state in enumerate(states) if state.seen]
        scores: list[np.ndarray | None] = [None] * len(states)
        if sequence is None or not wanted or not self.fuses_sequence:
            return scores
        recents = [states[n].seen[-sequence.max_len:] for n in wanted]
        for n, user in zip(wanted, sequence.scores_many(recents, self.catalog), strict=True):
            scores[n] = user
        return scores

    async def emit(self, recommendations: Sequence[Recommendation], last: EventT) -> None:
        """Publish recommendations (all of one trigger), each keyed by its user, answering events up to ``last``.

        They go at once (``worker.send_lists_at_once``) unless the broker holds more of
        ``last``'s partition: then the producer lingers, so the next batch's lists join them.
        """
        if not recommendations:
            return
        linger = not self.settings.worker.send_lists_at_once or behind(self.app, last)
        await self.sender.send_many(self.names.recommendations, [
            (recommendation.user_id.encode(), recommendation.to_json(), None) for recommendation in recommendations],
            linger=linger)
        self.metrics.recommendations_out.labels(recommendations[0].trigger).inc(len(recommendations))

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

    async def guarded_batch(self, handler: Callable[[Sequence[EventT]], Awaitable[None]],
                            batch: Sequence[EventT]) -> None:
        """Run a batch processor; if it fails, run the batch's events one at a time through
        :meth:`guarded`, so only the message at fault is dead-lettered.

        Tables and recommendations are written only when a batch completes, so no list is
        sent twice; dead letters, reroutes and item deltas of the events before the fault
        may repeat (a rare bug path: at-least-once, never lost).
        """
        if len(batch) > 1:
            try:
                await handler(batch)
                return
            except Exception:  # noqa: BLE001 - retried one by one below
                log.warning("a batch of %d events failed; processing them one by one", len(batch))

        async def one(event: EventT) -> None:
            await handler([event])

        for event in batch:
            await self.guarded(one, event)

    async def send_dead_letter(self, reason: str, event: EventT) -> None:
        """Send the original message and the reason to the dead-letter topic."""
        message = event.message
        letter = DeadLetter.of(reason, message.topic, message.partition, message.offset, event.value)
        await self.sender.send(self.names.dead_letter, event.key, letter.to_json())
        self.metrics.dead_lettered.labels(message.topic).inc()

    # -- sequence model -------------------------------------------------------

    def apply_model_chunk(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        """Collect one models-topic record; a completed snapshot waits for :meth:`serve_snapshots`."""
        if value is None:
            return
        try:
            completed = self.snapshot_chunks.add(value)
        except MalformedChunk as exc:
            self.metrics.sequence_snapshots.labels("refused").inc()
            log.warning("sequence model: %s; still serving %s", exc, self.serving_version())
            return
        if completed is not None:
            self.newest_snapshot = completed
            self.snapshot_arrived.set()

    async def follow_models(self) -> None:
        """Read the models topic and serve its snapshots; without the topic, serve the online model alone.

        A deployment whose topics predate the sequence model (and may not be created by
        workers) must keep working, so a missing models topic is a warning, not a crash.
        """
        try:
            await asyncio.gather(replicate_topic(self.settings.kafka, self.names.models, self.apply_model_chunk,
                                                 self.models_ready, fetch_max_wait_ms=RARELY_WRITTEN_FETCH_WAIT_MS),
                                 self.serve_snapshots())
        except TopicMissing as exc:
            log.warning("no sequence model: %s", exc)

    def serving_version(self) -> str:
        """The sequence-model version answering now (``"none"`` before the first)."""
        return "none" if self.sequence is None else self.sequence.version

    async def serve_snapshots(self) -> None:
        """Load each new snapshot in a thread and swap it in between two events (never pausing the stream).

        A damaged or non-finite snapshot is refused and the one being served stays. Only the
        newest snapshot present at start is loaded (the models topic is read to its end first).
        """
        await self.models_ready.wait()
        while True:
            await self.snapshot_arrived.wait()
            self.snapshot_arrived.clear()
            if self.newest_snapshot is None:
                continue
            version, data = self.newest_snapshot
            self.newest_snapshot = None
            started = time.perf_counter()
            try:
                query = await asyncio.to_thread(self._load_prepared, data)
            except ValueError as exc:  # InvalidSnapshot: unreadable, inconsistent or non-finite
                self.metrics.sequence_snapshots.labels("refused").inc()
                log.warning("sequence model %s refused: %s; still serving %s", version, exc, self.serving_version())
                continue
            self.sequence = query
            self.metrics.sequence_snapshots.labels("served").inc()
            log.info("sequence model %s served (%d items; loaded in %.0f ms)", query.version,
                     len(query.index), (time.perf_counter() - started) * 1000)

    def _load_prepared(self, data: bytes) -> SequenceQuery:
        """The snapshot's query, its catalogue rows and projection ready (in the loading thread)."""
        query = load_sequence_query(data)
        with contextlib.suppress(IndexError):  # rows moved mid-way (a prune): the first query maps them again
            query.prepare(self.catalog)
        return query

    # -- items ----------------------------------------------------------------

    async def on_item_updates(self, event: EventT) -> None:
        """Apply a batch of (coalesced) item deltas on the items' owner, which publishes each item once."""
        watch = self.metrics.stopwatch()
        try:
            deltas = decode_item_updates(event.value, self.config.mf.dim)
        except InvalidRecord as exc:
            await self.send_dead_letter(f"internal item update is malformed: {exc.reason}", event)
            return
        items = self.config.items
        # Out of the cache while they change: if storing fails, the cache never holds an
        # update the table lacks (the retry re-reads the table).
        updated = {item_id: self._owned.pop(item_id, None) or self._stored_item(item_id) for item_id in deltas}
        for item_id, item in updated.items():
            item.apply(item_id, deltas[item_id], items)
        # Stored and published in one: the changelog records go to this record's partition,
        # the items' (see publish_coalesced), where every replica reads them.
        await self.sender.store(self.items, [(event, item_id.encode(), encode_item_state(item_id, item.published(items)))
                                             for item_id, item in updated.items()])
        self._cache_owned(updated)
        watch.stop("item_owner")

    def _cache_owned(self, updated: dict[str, OwnedItem]) -> None:
        """Keep the items just stored decoded, the most recently updated last (bounded)."""
        cached = self.settings.worker.owned_items_cached
        if not cached:
            return
        self._owned.update(updated)
        while len(self._owned) > cached:
            del self._owned[next(iter(self._owned))]

    def _stored_item(self, item_id: str) -> OwnedItem:
        """An owned item as the items table holds it; a new one starts from its content, if announced."""
        value = stored(self.items, item_id.encode())
        if value is not None:
            return OwnedItem.of(decode_item_state(value, self.config.mf.dim)[1])
        item = OwnedItem()
        if item_id in self.item_features:
            item.vector = self.content.vector(self.item_features[item_id])
        return item

    def _forget_owned(self, *args: Any, **kwargs: Any) -> None:
        """Drop the decoded owned items (on a rebalance: ownership may move)."""
        self._owned.clear()

    async def publish_coalesced(self) -> None:
        """Send the merged item deltas to their owners.

        Deltas add up, so one merged delta per item per interval gives the owner
        what one delta per event would (up to the norm clip). They travel batched:
        one record per partition (at most ``ITEM_UPDATES_PER_RECORD`` items), sent to
        the partition Kafka's default partitioner gives each item_id, so an item's
        deltas and its row in the items table always meet on the same owner.
        """
        watch = self.metrics.stopwatch()
        pending, self._pending_updates = self._pending_updates, {}
        n = self.settings.topics.partitions
        by_partition: dict[int, dict[str, ItemDelta]] = {}
        for item_id, delta in pending.items():
            by_partition.setdefault(key_partition(item_id.encode(), n), {})[item_id] = delta
        records = []
        for partition, deltas in by_partition.items():
            ids = list(deltas)
            for start in range(0, len(ids), ITEM_UPDATES_PER_RECORD):
                chunk = {item_id: deltas[item_id] for item_id in ids[start:start + ITEM_UPDATES_PER_RECORD]}
                records.append((None, encode_item_updates(chunk), partition))
        await self.sender.send_many(self.names.item_updates, records)
        watch.stop("item_publish")

    def apply_item_state(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        """Update this worker's replica from one item-state record (written at ``timestamp_ms``)."""
        if key is None or value is None:
            return
        watch = self.metrics.stopwatch()
        item_id, item = decode_item_state(value, self.config.mf.dim)
        # The index only gets the replica's vectors, so one that differs from the replica's is
        # new to the index too, which then need not read its own copy back to compare.
        replicated = self.catalog.vector(item_id)  # compared as bytes: 0.1 against 2 µs for np.array_equal
        changed = replicated is not None and replicated.tobytes() != item.vector.tobytes()
        self.catalog.upsert(item_id, item)
        features = self.item_features.get(item_id)
        if features:  # an item the events have placed teaches the content map
            self.content.learn(features, item.vector)
        if item_id not in self.unavailable:
            self.index.upsert(item_id, item.vector, changed)  # searchable now; folded into the FAISS build later
            # Below the size lists search it from, a rebuild only costs CPU: a 10k catalogue
            # rebuilt after every 1,000 changed items (``index.rebuild_tombstone_share``).
            if len(self.catalog) >= self.index_searched_from:
                self.index.maybe_rebuild(background=True)
            if timestamp_ms is not None and self.catalogue_ready.is_set():  # not the backlog read at start
                self.metrics.item_freshness.observe(max(0.0, time.time() - timestamp_ms / 1000))
        watch.stop("replica")
