"""Training the sequence model, and its versioned snapshots.

- :class:`Sequences` keeps every user's recent distinct items (the same rule as the
  worker's ``UserState.seen``), for at most ``max_users`` users (least recently active
  forgotten first), and maps streamrec item ids to the model's indices.
- :class:`SequenceTrainer` fine-tunes a :class:`~streamrec.models.sequence.SequenceModel`
  on random batches of those sequences: at every position, predict the next item
  (sampled softmax). It runs in the background trainer and in ``streamrec train``;
  ``streamrec evaluate`` calls it at the live trainer's cadence.
- :class:`SequenceSnapshot` is what the trainer ships: weights, config, the item-id
  mapping and a version. :meth:`SequenceSnapshot.load` refuses a damaged or
  non-finite snapshot, so a worker keeps the one it has.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from streamrec.models.sequence import SequenceConfig, SequenceModel

ItemId = str
UserId = str

SNAPSHOT_FORMAT = 1


class InvalidSnapshot(ValueError):
    """A snapshot that must not be served (unreadable, wrong shape, non-finite weights)."""


class Sequences:
    """Users' recent distinct items as model indices, bounded in users and length."""

    def __init__(self, max_len: int, max_users: int = 1_000_000) -> None:
        self.max_len = max_len
        self.max_users = max_users
        self.item_ids: list[ItemId] = []  # index i + 1 -> item id
        self.index: dict[ItemId, int] = {}
        self.users: OrderedDict[UserId, list[int]] = OrderedDict()  # least recently active first
        self.active: set[UserId] = set()  # users with events since the last take_active()

    def item_index(self, item_id: ItemId) -> int:
        """The model index of ``item_id`` (a new item gets the next one)."""
        index = self.index.get(item_id)
        if index is None:
            self.item_ids.append(item_id)
            index = self.index[item_id] = len(self.item_ids)
        return index

    def add(self, user_id: UserId, item_id: ItemId) -> None:
        """Append an event: the item moves to the end of the user's sequence."""
        index = self.item_index(item_id)
        sequence = self.users.pop(user_id, None)
        if sequence is None:
            sequence = []
            if len(self.users) >= self.max_users:
                self.users.popitem(last=False)
        elif index in sequence:
            sequence.remove(index)
        sequence.append(index)
        # One more than the model reads: the oldest is the first target.
        del sequence[:-(self.max_len + 1)]
        self.users[user_id] = sequence
        self.active.add(user_id)

    def take_active(self) -> set[UserId]:
        """The users with events since the last call (still remembered), and start counting afresh."""
        active, self.active = self.active, set()
        return {user_id for user_id in active if user_id in self.users}

    def of(self, user_id: UserId) -> list[int]:
        """The user's sequence (model indices, oldest first; empty if unknown)."""
        return self.users.get(user_id, [])

    def __len__(self) -> int:
        return len(self.users)


def left_padded(sequences: Iterable[list[int]], length: int) -> torch.Tensor:
    """A ``(n, length)`` index tensor of the last ``length`` items of each sequence, padded with 0 on the left."""
    rows = [sequence[-length:] for sequence in sequences]
    batch = torch.zeros(len(rows), length, dtype=torch.long)
    for row, sequence in enumerate(rows):
        if sequence:
            batch[row, length - len(sequence):] = torch.tensor(sequence, dtype=torch.long)
    return batch


class SequenceTrainer:
    """Fine-tunes one model on :class:`Sequences`; deterministic for a given seed and call order.

    ``trains_on`` picks the users whose sequences are trained on (default: all), so a
    held-back slice can judge the result.
    """

    def __init__(self, config: SequenceConfig, sequences: Sequences, model: SequenceModel | None = None,
                 trains_on: Callable[[UserId], bool] | None = None) -> None:
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.config = config
        self.sequences = sequences
        self.model = model or SequenceModel(config, n_items=max(64, len(sequences.item_ids)))
        self.trains_on = trains_on
        self.rng = np.random.default_rng(config.seed)
        self.optimizer = self._new_optimizer()
        self.steps = 0
        self.examples = 0  # training positions seen (targets predicted)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.config.learning_rate,
                                weight_decay=self.config.weight_decay)

    def _fit_catalogue(self) -> None:
        """Grow the item table (doubling, so the optimizer is rebuilt rarely) to every known item."""
        needed = len(self.sequences.item_ids)
        if needed > self.model.n_items:
            self.model.grow(max(needed, 2 * self.model.n_items))
            self.optimizer = self._new_optimizer()

    def train(self, steps: int) -> float:
        """Run ``steps`` optimizer steps on random users' sequences; the mean loss (NaN if none ran)."""
        active = self.sequences.take_active()
        eligible = [(user_id, sequence) for user_id, sequence in self.sequences.users.items()
                    if len(sequence) > 1 and (self.trains_on is None or self.trains_on(user_id))]
        users = [sequence for _, sequence in eligible]
        recent = [sequence for user_id, sequence in eligible if user_id in active]
        if not users or steps <= 0:
            return math.nan
        self._fit_catalogue()
        self.model.train()
        losses = []
        size = min(self.config.batch_size, len(users))
        from_recent = round(size * self.config.recent_share) if recent else 0
        for _ in range(steps):
            batch = [recent[i] for i in self.rng.integers(0, len(recent), from_recent)] if from_recent else []
            batch += [users[i] for i in self.rng.integers(0, len(users), size - from_recent)]
            losses.append(self._step(batch))
        self.model.eval()
        return float(np.mean(losses))

    def _step(self, batch: list[list[int]]) -> float:
        length = self.config.max_len
        padded = left_padded(batch, length + 1)
        inputs, targets = padded[:, :-1], padded[:, 1:]
        present = (inputs > 0) & (targets > 0)  # a target with nothing before it teaches nothing
        hidden = self.model(inputs)[present]  # (positions, dim)
        wanted = targets[present]
        n = len(self.sequences.item_ids)
        if n <= self.config.negatives:  # small catalogue: the full softmax
            candidates = torch.arange(1, n + 1)
        else:
            sampled = torch.from_numpy(self.rng.integers(1, n + 1, self.config.negatives))
            candidates = torch.unique(torch.cat((wanted, sampled)))
        logits = hidden @ self.model.items.weight[candidates].T
        loss = functional.cross_entropy(logits, torch.searchsorted(candidates, wanted))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        self.steps += 1
        self.examples += int(wanted.numel())
        return float(loss.detach())

    def snapshot(self, version: str, trained_events: int) -> SequenceSnapshot:
        """A frozen copy of the current weights, to publish as ``version``."""
        return SequenceSnapshot.of(self.model, self.sequences.item_ids, version, trained_events)


@dataclass(frozen=True)
class SequenceSnapshot:
    """A versioned, immutable model for queries: weights, config and the item ids of its indices."""

    version: str
    config: SequenceConfig
    item_ids: list[ItemId]
    state: dict[str, torch.Tensor]
    trained_events: int
    created_ms: int

    @classmethod
    def of(cls, model: SequenceModel, item_ids: list[ItemId], version: str, trained_events: int) -> SequenceSnapshot:
        """Copy ``model``'s weights (training may go on) with the first ``len(item_ids)`` items."""
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        state["items.weight"] = state["items.weight"][:len(item_ids) + 1]
        return cls(version, model.config, list(item_ids), state, trained_events, int(time.time() * 1000))

    def model(self) -> SequenceModel:
        """The model in eval mode (one per snapshot: it holds no training state)."""
        model = SequenceModel(self.config, n_items=len(self.item_ids))
        model.load_state_dict(self.state)
        return model.eval()

    def to_bytes(self) -> bytes:
        """The snapshot serialised (``torch.save`` of tensors and plain data only)."""
        buffer = io.BytesIO()
        torch.save({"format": SNAPSHOT_FORMAT, "version": self.version, "config": dataclasses.asdict(self.config),
                    "item_ids": self.item_ids, "state": self.state, "trained_events": self.trained_events,
                    "created_ms": self.created_ms}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SequenceSnapshot:
        """Read and check a snapshot.

        Raises
        ------
        InvalidSnapshot
            Unreadable, another format, inconsistent shapes or non-finite weights.
        """
        try:
            raw: dict[str, Any] = torch.load(io.BytesIO(data), weights_only=True)  # no pickled code
            if raw.get("format") != SNAPSHOT_FORMAT:
                raise InvalidSnapshot(f"snapshot format {raw.get('format')!r}, expected {SNAPSHOT_FORMAT}")
            snapshot = cls(str(raw["version"]), SequenceConfig(**raw["config"]), [str(i) for i in raw["item_ids"]],
                           dict(raw["state"]), int(raw["trained_events"]), int(raw["created_ms"]))
        except InvalidSnapshot:
            raise
        except Exception as exc:  # noqa: BLE001 - any damage is the same answer: do not serve it
            raise InvalidSnapshot(f"unreadable sequence-model snapshot: {exc}") from exc
        snapshot.check()
        return snapshot

    def check(self) -> None:
        """Raise :class:`InvalidSnapshot` unless the weights fit the config and are all finite."""
        for name, tensor in self.state.items():
            if not bool(torch.isfinite(tensor).all()):
                raise InvalidSnapshot(f"snapshot {self.version}: non-finite weights in {name}")
        try:
            self.model()
        except RuntimeError as exc:
            raise InvalidSnapshot(f"snapshot {self.version}: weights do not fit its config: {exc}") from exc

    def save(self, directory: Path) -> Path:
        """Write ``<directory>/sequence-<version>.pt`` atomically (a reader never sees half a file)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"sequence-{self.version}.pt"
        partial = path.with_suffix(".partial")
        partial.write_bytes(self.to_bytes())
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> SequenceSnapshot:
        """Read and check a snapshot file (see :meth:`from_bytes`)."""
        return cls.from_bytes(path.read_bytes())
