"""Prequential (test-then-train) evaluation: replay a stream in event-time order.

For every evaluated event, each model is first asked for the user's top-K
(excluding the items the user has already seen), the answer is scored against
the item the user actually chose, and only then does every model learn from
the event. All models see the same stream, so their figures compare directly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.eval.datasets import Interaction, ItemMetadata
from streamrec.models.baselines import OnlineModel
from streamrec.models.user_state import UserState
from streamrec.models.weights import event_weight


@dataclass(slots=True)
class SplitScore:
    """Running ranking metrics over the evaluated events of one user group."""

    n: int = 0
    hits: int = 0
    ndcg: float = 0.0
    reciprocal_rank: float = 0.0

    def add(self, rank: int | None) -> None:
        """Score one evaluated event; ``rank`` is the 0-based position of the true item, if listed."""
        self.n += 1
        if rank is not None:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(rank + 2)
            self.reciprocal_rank += 1.0 / (rank + 1)

    def as_dict(self) -> dict[str, float | int]:
        """HR@K, NDCG@K and MRR@K (0 when nothing was evaluated) and the event count."""
        n = max(self.n, 1)
        return {"events": self.n, "hr": self.hits / n, "ndcg": self.ndcg / n,
                "mrr": self.reciprocal_rank / n}


@dataclass
class ModelReport:
    """Everything measured for one model on one stream."""

    overall: SplitScore = field(default_factory=SplitScore)
    new_users: SplitScore = field(default_factory=SplitScore)
    returning_users: SplitScore = field(default_factory=SplitScore)
    new_items: SplitScore = field(default_factory=SplitScore)
    """Events whose item nobody had chosen before (only content can put it in a list)."""
    recommended: set[str] = field(default_factory=set)
    seconds: float = 0.0
    """Time in the model's per-event work (queries and learning steps)."""
    background_seconds: float = 0.0
    """Time in work that runs beside the workers live (training the sequence model)."""
    rolling_hits: list[int] = field(default_factory=list)
    catalogue_size: int = 0
    """Distinct items in the stream (the denominator of coverage)."""
    diversity_total: float = 0.0
    diversity_lists: int = 0
    """Sum and count of intra-list diversities, for models that can measure them (``list_diversity``)."""

    def as_dict(self, k: int) -> dict[str, Any]:
        """Plain-JSON summary; coverage is the share of the catalogue ever recommended, diversity
        the mean intra-list diversity (``None`` for models without item vectors)."""
        return {
            **{name if name == "events" else f"{name}@{k}": value
               for name, value in self.overall.as_dict().items()},
            "new_users": self.new_users.as_dict(),
            "returning_users": self.returning_users.as_dict(),
            "new_items": self.new_items.as_dict(),
            "coverage": len(self.recommended) / max(self.catalogue_size, 1),
            "diversity": self.diversity_total / self.diversity_lists if self.diversity_lists else None,
            "events_per_s": self.overall.n / self.seconds if self.seconds > 0 else 0.0,
            "background_seconds": self.background_seconds,
        }


@dataclass(frozen=True, slots=True)
class EvaluationSettings:
    """How to replay: list length, which events to score, how much each type weighs."""

    k: int = 10
    stride: int = 1
    """Score every ``stride``-th event (all events are learned from)."""
    type_weights: Mapping[str, float] = field(default_factory=lambda: {"rating": 1.0})
    value_weighted_types: Collection[str] = ()
    history_size: int = 200
    """Seen items remembered per user (and excluded from their lists)."""


def _rank(recommended: list[tuple[str, float]], item_id: str) -> int | None:
    for position, (candidate, _) in enumerate(recommended):
        if candidate == item_id:
            return position
    return None


def evaluate(stream: Iterable[Interaction], models: Mapping[str, OnlineModel],
             settings: EvaluationSettings, on_progress: Callable[[int], None] | None = None,
             items: Mapping[str, ItemMetadata] | None = None) -> dict[str, ModelReport]:
    """Replay ``stream`` through every model, test-then-train; return a report per model.

    With ``items`` (content per item id), each item is announced to the models that take
    announcements just before its first event, as if it had just been added to the catalogue.
    """
    reports = {name: ModelReport() for name in models}
    histories: dict[str, UserState] = {}
    catalogue: set[str] = set()
    for index, event in enumerate(stream):
        history = histories.setdefault(event.user_id, UserState())
        new_item = event.item_id not in catalogue
        if new_item and items is not None and event.item_id in items:
            meta = items[event.item_id]
            for name, model in models.items():
                announce = getattr(model, "announce", None)
                if announce is not None:
                    started = time.perf_counter()
                    announce(event.item_id, meta.categories, meta.title)
                    reports[name].seconds += time.perf_counter() - started
        if index % settings.stride == 0:
            split = "new_users" if history.n_events == 0 else "returning_users"
            seen = set(history.seen)
            for name, model in models.items():
                exclude = () if getattr(model, "excludes_seen", False) else seen
                started = time.perf_counter()
                top = model.recommend(event.user_id, settings.k, exclude=exclude)
                reports[name].seconds += time.perf_counter() - started
                rank = _rank(top, event.item_id)
                _score(reports[name], split, rank, top)
                if new_item:
                    reports[name].new_items.add(rank)
                measure = getattr(model, "list_diversity", None)
                if measure is not None and len(top) > 1:  # not timed: a metric, not the model's work
                    reports[name].diversity_total += measure([item for item, _ in top])
                    reports[name].diversity_lists += 1
        weight = event_weight(event.type, event.value, settings.type_weights,
                              settings.value_weighted_types)
        for name, model in models.items():
            started = time.perf_counter()
            model.learn_one(event.user_id, event.item_id, weight, event.ts_ms)
            reports[name].seconds += time.perf_counter() - started
            background = getattr(model, "background_work", None)
            if background is not None:  # off the hot path live (the trainer): timed apart
                started = time.perf_counter()
                background()
                reports[name].background_seconds += time.perf_counter() - started
        history.record(event.item_id, None, settings.history_size, 0)
        catalogue.add(event.item_id)
        if on_progress is not None:
            on_progress(1)
    for report in reports.values():
        report.catalogue_size = len(catalogue)
    return reports


def _score(report: ModelReport, split: str, rank: int | None, top: list[tuple[str, float]]) -> None:
    report.overall.add(rank)
    getattr(report, split).add(rank)
    report.rolling_hits.append(int(rank is not None))
    report.recommended.update(item for item, _ in top)


def rolling_hit_rate(hits: list[int], window: int) -> np.ndarray:
    """Hit rate over a sliding window of evaluated events, shape ``(len(hits),)``, float64."""
    if not hits:
        return np.zeros(0)
    cumulative = np.cumsum(np.asarray(hits, dtype=np.float64))
    ends = np.arange(1, len(hits) + 1)
    starts = np.maximum(ends - window, 0)
    previous = np.concatenate(([0.0], cumulative))[starts]
    return (cumulative - previous) / (ends - starts)


def score_pushed_lists(stream: Sequence[Interaction], pushed: Mapping[int, list[str]], k: int,
                       groups: Mapping[int, str] | None = None) -> dict[str, ModelReport]:
    """Score the lists a live pipeline pushed: the one after a user's previous event predicts their next.

    ``pushed[i]`` is the list emitted after event ``i`` of ``stream`` (missing: counted as a miss).
    Only returning users' events can be scored (a new user had no earlier push). The reports
    are per group of the earlier push (``groups[i]``, e.g. its A/B arm), all under ``"all"``.
    """
    reports: dict[str, ModelReport] = {"all": ModelReport()}
    previous: dict[str, int] = {}
    for index, event in enumerate(stream):
        earlier = previous.get(event.user_id)
        if earlier is not None:
            top = [(item, 0.0) for item in pushed.get(earlier, [])[:k]]
            rank = _rank(top, event.item_id)
            _score(reports["all"], "returning_users", rank, top)
            group = None if groups is None else groups.get(earlier)
            if group is not None:
                _score(reports.setdefault(group, ModelReport()), "returning_users", rank, top)
        previous[event.user_id] = index
    catalogue = len({event.item_id for event in stream})
    for report in reports.values():
        report.catalogue_size = catalogue
    return reports
