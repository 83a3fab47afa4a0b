"""Training the sequence model, and its versioned snapshots.

- :class:`Sequences` keeps every user's recent distinct items (the same rule as the
  worker's ``UserState.seen``; ``SequenceConfig.history`` of them), for at most
  ``max_users`` users (least recently active forgotten first), and maps streamrec item
  ids to the model's indices.
- :class:`SequenceTrainer` fine-tunes a :class:`~streamrec.models.sequence.SequenceModel`
  on random batches of those sequences: at every position, predict the next item
  (sampled softmax). It runs in the background trainer and in ``streamrec train``;
  ``streamrec evaluate`` calls it at the live trainer's cadence.
- :func:`snapshot_of` and :func:`model_of` turn a model into the
  :class:`~streamrec.models.sequence_snapshot.SequenceSnapshot` the trainer ships
  (numpy arrays, so workers never import torch) and back (the trainer resumes from one).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch.nn import functional

from streamrec.models.sequence import SequenceModel
from streamrec.models.sequence_snapshot import SequenceConfig, SequenceSnapshot

ItemId = str
UserId = str

OLDER_WINDOWS = 0.75
"""Share of training examples that end at a random earlier item of a user's kept history.
Measured on ML-100K (sequence model alone, HR@10 returning, same cost per step): 0.143
reading only the latest 50 items, 0.161 with 200 kept and half the windows older, 0.165
with three quarters."""


class Sequences:
    """Users' recent distinct items as model indices, bounded in users and length.

    ``history`` items are kept per user, plus one: the oldest is the first target.
    """

    def __init__(self, history: int, max_users: int = 1_000_000) -> None:
        self.history = history
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
        del sequence[:-(self.history + 1)]
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

    def train(self, steps: int, cpu_share: float = 1.0) -> float:
        """Run ``steps`` optimizer steps on random users' sequences; the mean loss (NaN if none ran).

        With ``cpu_share`` below 1, each step is followed by a pause so that the steps take
        at most that share of the wall time: the same work, spread out, so processes sharing
        the machine (its caches and memory bandwidth too) lose less at any moment.
        """
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
            started = time.perf_counter()
            batch = [recent[i] for i in self.rng.integers(0, len(recent), from_recent)] if from_recent else []
            batch += [users[i] for i in self.rng.integers(0, len(users), size - from_recent)]
            losses.append(self._step([self._window(sequence) for sequence in batch]))
            if cpu_share < 1.0:
                time.sleep((time.perf_counter() - started) * (1.0 / cpu_share - 1.0))
        self.model.eval()
        return float(np.mean(losses))

    def _window(self, sequence: list[int]) -> list[int]:
        """What one training example reads of a kept sequence: its latest ``max_len + 1`` items
        or, :data:`OLDER_WINDOWS` of the time when more are kept, as many ending at a random
        earlier item. So older transitions keep teaching after they leave the window the
        model reads."""
        length = self.config.max_len + 1
        if len(sequence) <= length or self.rng.random() >= OLDER_WINDOWS:
            return sequence
        return sequence[:int(self.rng.integers(length, len(sequence) + 1))]

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
        return snapshot_of(self.model, self.sequences.item_ids, version, trained_events)


def snapshot_of(model: SequenceModel, item_ids: list[ItemId], version: str, trained_events: int) -> SequenceSnapshot:
    """Copy ``model``'s weights (training may go on) with the first ``len(item_ids)`` items, as numpy."""
    views = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
    views["items.weight"] = views["items.weight"][:len(item_ids) + 1]  # the table grows ahead of the items
    state = {name: view.astype(np.float32) for name, view in views.items()}  # copies
    return SequenceSnapshot(version, model.config, list(item_ids), state, trained_events, int(time.time() * 1000))


def model_of(snapshot: SequenceSnapshot) -> SequenceModel:
    """The torch model of ``snapshot``, in eval mode (for the trainer to go on from it, and for tests)."""
    model = SequenceModel(snapshot.config, n_items=len(snapshot.item_ids))
    model.load_state_dict({name: torch.tensor(array) for name, array in snapshot.state.items()})
    return model.eval()
