"""streamrec's model with the sequence model fused in, in one process (for ``streamrec evaluate``).

:class:`SequenceRecommender` is :class:`~streamrec.models.online_recommender.InProcessRecommender`
(online embeddings, co-visits, trending: the worker's code) plus what the live trainer
does beside the workers: it keeps recent sequences, fine-tunes the sequence model every
``TrainerSchedule.every_events`` events and swaps the new snapshot into the query path.
The fine-tuning runs in :meth:`SequenceRecommender.background_work`, which the evaluator
times apart from the per-event work, as it runs in another process live.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from streamrec.models.online_recommender import InProcessRecommender, RecommenderConfig, recommend
from streamrec.models.sequence_query import SequenceQuery
from streamrec.models.sequence_snapshot import SequenceConfig
from streamrec.models.sequence_training import Sequences, SequenceTrainer
from streamrec.models.user_state import UserState

ItemId = str
UserId = str


@dataclass(frozen=True, slots=True)
class TrainerSchedule:
    """When the trainer fine-tunes and how much: ``steps`` optimizer steps every ``every_events`` events."""

    every_events: int = 2_000
    steps: int = 40
    max_users: int = 1_000_000
    """Users whose recent sequences the trainer keeps (least recently active forgotten first)."""

    def __post_init__(self) -> None:
        for name in ("every_events", "steps", "max_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer {name} must be >= 1, got {getattr(self, name)}")


class SequenceRecommender(InProcessRecommender):
    """The in-process model with a continuously trained sequence model fused into its queries."""

    def __init__(self, config: RecommenderConfig, sequence: SequenceConfig, schedule: TrainerSchedule,
                 publish_every: int = 1) -> None:
        super().__init__(config, publish_every)
        self.schedule = schedule
        self.sequences = Sequences(sequence.history, schedule.max_users)
        self.trainer = SequenceTrainer(sequence, self.sequences)
        self.serving: SequenceQuery | None = None  # no snapshot before the first training round
        self.events = 0
        self._events_at_training = 0
        self.snapshots = 0

    @property
    def model_version(self) -> str:  # type: ignore[override]
        """The sequence snapshot answering now (the online model's version before the first)."""
        return self.serving.version if self.serving is not None else super().model_version

    def learn_one(self, user_id: UserId, item_id: ItemId, weight: float = 1.0, ts_ms: int | None = None) -> None:
        """Learn one event online, and keep it for the trainer."""
        super().learn_one(user_id, item_id, weight, ts_ms)
        self.sequences.add(user_id, item_id)
        self.events += 1

    def background_work(self) -> None:
        """What the trainer would have done by now: fine-tune and swap in a snapshot when due."""
        if self.events - self._events_at_training >= self.schedule.every_events:
            self._events_at_training = self.events
            self.trainer.train(self.schedule.steps)
            self.snapshots += 1
            self.serving = SequenceQuery(self.trainer.snapshot(f"sequence-v{self.snapshots}", self.events))

    def recommend(self, user_id: UserId, k: int, exclude: Collection[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """The user's top ``k``, the sequence model's scores fused with the online signals."""
        state = self.users.get(user_id) or UserState()
        scores = None
        if self.serving is not None and state.seen:
            scores = self.serving.scores(state.seen[-self.serving.max_len:], self.catalog)
        ranked = recommend(state, self.catalog, k, self.config, exclude, self.index, sequence=scores)
        return [(item.item_id, item.score) for item in ranked]

