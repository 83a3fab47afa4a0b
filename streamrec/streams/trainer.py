"""The background trainer (``streamrec trainer``): fine-tunes the sequence model beside the workers.

It reads the events topic from the beginning (no consumer group: its state is the
recent sequences, rebuilt on start), keeps each user's recent distinct items, and
every ``sequence.train_every_events`` events (or ``sequence.train_every_s`` seconds
with new events) runs ``sequence.train_steps`` optimizer steps. Each result becomes a
versioned snapshot that passes two gates before it is published to the models topic
(``model_topic.py``), where every worker picks it up:

1. every weight is finite and fits the config (:meth:`SequenceSnapshot.check`);
2. on a held-back slice of users (``sequence.holdout_share``, chosen by a stable hash,
   never trained on), HR@10 of predicting their latest item is not more than
   ``sequence.max_quality_drop`` (relative) below the snapshot being served.

A refused snapshot is logged and the trainer goes back to the served weights.
It starts from the newest snapshot on the models topic, or from ``--checkpoint``.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamrec.config import Settings
from streamrec.errors import InvalidRecord
from streamrec.models.sequence_query import SequenceQuery, held_out_hit_rate
from streamrec.models.sequence_snapshot import InvalidSnapshot, SequenceSnapshot
from streamrec.models.sequence_training import Sequences, SequenceTrainer, model_of
from streamrec.streams.clients import make_producer, open_consumer
from streamrec.streams.model_topic import MalformedChunk, SnapshotAssembler, snapshot_records
from streamrec.streams.records import decode_event
from streamrec.streams.topics import TopicNames

log = logging.getLogger(__name__)

MIN_HELD_OUT_USERS = 20
"""Below this many held-back users the quality gate has too little to judge, and only checks the weights."""
TRAINER_FETCH_WAIT_MS = 500
"""The trainer's fetch wait (not ``kafka.fetch_max_wait_ms``, tuned for the workers' latency): it
trains every few thousand events, so fetching twice a second loses nothing and spares the broker
the tens of fetches a second that the workers' own fetches would queue behind."""


@dataclass(frozen=True, slots=True)
class Round:
    """What one fine-tuning round did (logged, and returned for tests and benchmarks)."""

    version: str
    events: int
    users: int
    loss: float
    train_seconds: float
    held_out_hr: float | None
    served_hr: float | None
    published: bool
    reason: str
    size_bytes: int


def yield_cpu(nice: int, idle: bool) -> None:
    """Let the workers sharing this machine have the CPU first (this process and threads it starts).

    Raises the nice value by ``nice`` and, with ``idle`` on Linux, moves the process to
    ``SCHED_IDLE``: it then runs only when no other process wants the core, and a worker
    waking up preempts it at once. Nice alone still gives it a share of a busy core
    (about 10% against one worker at nice 10), which shows in the worker's p99.
    """
    os.nice(nice)
    if idle and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def held_out(user_id: str, share: float) -> bool:
    """True for the stable ``share`` of users the trainer never trains on (its quality gate's slice)."""
    return zlib.crc32(user_id.encode()) % 10_000 < share * 10_000


class Trainer:
    """One trainer process's state: sequences, the model being tuned, the snapshot served."""

    def __init__(self, settings: Settings, checkpoint: Path | None = None) -> None:
        self.settings = settings
        self.names = TopicNames.for_prefix(settings.topics.prefix)
        sequence = settings.sequence
        self.schedule = sequence.schedule()
        self.served = SequenceSnapshot.load(checkpoint) if checkpoint is not None else self._newest_published()
        self.sequences = Sequences(sequence.history, sequence.max_users)
        if self.served is not None:  # go on from it: same item indices, same weights
            for item_id in self.served.item_ids:
                self.sequences.item_index(item_id)
        self.trainer = self._trainer_from_served()
        self.events = 0
        self.rounds = 0
        self._events_at_round = 0
        self._round_started = time.monotonic()

    def _trainer_from_served(self) -> SequenceTrainer:
        share = self.settings.sequence.holdout_share
        model = None if self.served is None else model_of(self.served).train()
        return SequenceTrainer(self.settings.sequence.config(), self.sequences, model,
                               trains_on=lambda user_id: not held_out(user_id, share))

    def _newest_published(self) -> SequenceSnapshot | None:
        """The newest valid snapshot on the models topic (read to its end), if any."""
        consumer = open_consumer(self.settings, [self.names.models], from_beginning=True)
        assembler, newest = SnapshotAssembler(), None
        try:
            while messages := consumer.poll(2.0):
                for message in messages:
                    try:
                        completed = assembler.add(message.value() or b"")
                    except MalformedChunk:
                        continue
                    if completed is not None:
                        newest = completed
        finally:
            consumer.close()
        if newest is None:
            return None
        try:
            return SequenceSnapshot.from_bytes(newest[1])
        except InvalidSnapshot as exc:
            log.warning("newest snapshot on %s is unusable (%s); starting afresh", self.names.models, exc)
            return None

    def add(self, value: bytes | None) -> None:
        """Take one events-topic record (invalid ones are skipped: the workers dead-letter them)."""
        try:
            event = decode_event(value or b"", self.settings.events, int(time.time() * 1000))
        except InvalidRecord:
            return
        self.sequences.add(event.user_id, event.item_id)
        self.events += 1

    def due(self) -> bool:
        """A round is due: enough new events, or enough time with some."""
        new = self.events - self._events_at_round
        waited = time.monotonic() - self._round_started
        return new >= self.schedule.every_events or (new > 0 and waited >= self.settings.sequence.train_every_s)

    def train_round(self, publish: Callable[[SequenceSnapshot], int]) -> Round:
        """Fine-tune, gate the result, and ``publish`` it (returns the bytes sent) if it passes."""
        self._events_at_round, self._round_started = self.events, time.monotonic()
        self.rounds += 1
        started = time.perf_counter()
        loss = self.trainer.train(self.schedule.steps, self.settings.sequence.trainer_cpu_share)
        seconds = time.perf_counter() - started
        version = f"seq-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{self.rounds}"
        candidate = self.trainer.snapshot(version, self.events)
        held_out_hr = served_hr = None
        try:
            candidate.check()
            slice_ = self._held_out_sequences()
            if len(slice_) >= MIN_HELD_OUT_USERS and self.served is not None:
                held_out_hr = held_out_hit_rate(SequenceQuery(candidate), slice_)
                served_hr = held_out_hit_rate(SequenceQuery(self.served), slice_)
                floor = served_hr * (1.0 - self.settings.sequence.max_quality_drop)
                if held_out_hr < floor:
                    raise InvalidSnapshot(f"held-out HR@10 {held_out_hr:.4f} is below {floor:.4f} "
                                          f"({served_hr:.4f} served, {len(slice_)} users)")
        except InvalidSnapshot as exc:
            self.trainer = self._trainer_from_served()  # back to the weights being served
            result = Round(version, self.events, len(self.sequences), loss, seconds, held_out_hr, served_hr,
                           False, str(exc), 0)
        else:
            size = publish(candidate)
            self.served = candidate
            result = Round(version, self.events, len(self.sequences), loss, seconds, held_out_hr, served_hr,
                           True, "published", size)
        log.info("round %d: %s %s after %d events (%d users), %d steps in %.1f s, loss %.3f, "
                 "held-out HR@10 %s vs %s served: %s", self.rounds, "published" if result.published else "refused",
                 version, self.events, result.users, self.schedule.steps, seconds, loss,
                 _maybe(held_out_hr), _maybe(served_hr), result.reason)
        return result

    def _held_out_sequences(self) -> list[list[str]]:
        share = self.settings.sequence.holdout_share
        ids = self.sequences.item_ids
        return [[ids[index - 1] for index in sequence] for user_id, sequence in self.sequences.users.items()
                if len(sequence) > 1 and held_out(user_id, share)][-1000:]  # the most recently active

    def run(self, stop: Callable[[], bool]) -> None:
        """Consume events and train/publish rounds until ``stop()``."""
        consumer = open_consumer(self.settings, [self.names.events], from_beginning=True,
                                 fetch_max_wait_ms=TRAINER_FETCH_WAIT_MS)
        producer = make_producer(self.settings)

        def publish(snapshot: SequenceSnapshot) -> int:
            data = snapshot.to_bytes()
            for key, value in snapshot_records(snapshot.version, data):
                producer.send(self.names.models, key, value)
            producer.flush()
            return len(data)

        log.info("trainer reading %s (starting from %s)", self.names.events,
                 "scratch" if self.served is None else self.served.version)
        try:
            while not stop():
                for message in consumer.poll(0.2, 5000):
                    self.add(message.value())
                if self.due():
                    self.train_round(publish)
        finally:
            consumer.close()
            producer.close()


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
