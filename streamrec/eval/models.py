"""The models `streamrec evaluate` compares, built by name from one configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from streamrec.index.live_index import IndexConfig, LiveIndex
from streamrec.models.baselines import DecayedPopularity, MostPopular, OnlineModel
from streamrec.models.online_recommender import FusionWeights, InProcessRecommender, RecommenderConfig
from streamrec.models.sequence_recommender import SequenceRecommender, TrainerSchedule
from streamrec.models.sequence_snapshot import SequenceConfig

_ONLY_COVISIT = FusionWeights(mf=0.0, covisit=1.0, trending=0.0, cold_start=0.0)
_ONLY_EMBEDDINGS = FusionWeights(mf=1.0, covisit=0.0, trending=0.0, cold_start=0.0)
_ONLY_SEQUENCE = FusionWeights(mf=0.0, covisit=0.0, trending=0.0, cold_start=0.0, sequence=1.0)


@dataclass(frozen=True)
class ModelSetup:
    """What the models are built from: the online model's config and the sequence model's."""

    config: RecommenderConfig
    publish_every: int = 1
    """Publish item changes to the replica every n events (1: at once)."""
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    schedule: TrainerSchedule = field(default_factory=TrainerSchedule)
    sequence_weight: float = 2.5
    """The sequence model's weight in ``streamrec+sequence``."""

    def with_fusion(self, fusion: FusionWeights) -> RecommenderConfig:
        """The online model's config with other signal weights."""
        return dataclasses.replace(self.config, fusion=fusion)


#: Name -> factory. Baselines first, so tables read bottom-up as gains.
MODEL_FACTORIES: dict[str, Callable[[ModelSetup], OnlineModel]] = {
    "popular": lambda setup: MostPopular(setup.config.max_items),
    "trending": lambda setup: DecayedPopularity(setup.config.half_life_s, setup.config.max_items),
    "covisit": lambda setup: InProcessRecommender(setup.with_fusion(_ONLY_COVISIT), setup.publish_every),
    "online": lambda setup: InProcessRecommender(setup.with_fusion(_ONLY_EMBEDDINGS), setup.publish_every),
    "streamrec": lambda setup: InProcessRecommender(setup.config, setup.publish_every),
    "streamrec-index": lambda setup: InProcessRecommender(
        dataclasses.replace(setup.config, index_min_items=0), setup.publish_every,
        LiveIndex(IndexConfig(dim=setup.config.mf.dim))),
    "sequence": lambda setup: SequenceRecommender(setup.with_fusion(_ONLY_SEQUENCE), setup.sequence,
                                                  setup.schedule, setup.publish_every),
    "streamrec+sequence": lambda setup: SequenceRecommender(
        setup.with_fusion(dataclasses.replace(setup.config.fusion, sequence=setup.sequence_weight)),
        setup.sequence, setup.schedule, setup.publish_every),
}
"""``covisit`` (item-item co-occurrence with the user's last ``covisit_history`` items) and
``online`` (the pure embedding model) are the default model with one signal switched on;
``streamrec-index`` is the default model querying a live FAISS index for candidates instead
of scoring the whole catalogue (the worker's query path). ``sequence`` is the self-attention
model alone and ``streamrec+sequence`` the default model with it fused in; both are
fine-tuned as the trainer would be live (``ModelSetup.schedule``)."""


def build_models(names: list[str], setup: ModelSetup) -> dict[str, OnlineModel]:
    """Fresh models for ``names`` (a subset of :data:`MODEL_FACTORIES`), in that order.

    Raises
    ------
    ValueError
        Naming the unknown model and the known ones.
    """
    unknown = [name for name in names if name not in MODEL_FACTORIES]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(MODEL_FACTORIES)}")
    return {name: MODEL_FACTORIES[name](setup) for name in names}
