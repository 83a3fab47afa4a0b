"""The models `streamrec evaluate` compares, built by name from one configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from streamrec.index.live_index import IndexConfig, LiveIndex
from streamrec.models.baselines import DecayedPopularity, MostPopular, OnlineModel
from streamrec.models.online_recommender import FusionWeights, InProcessRecommender, RecommenderConfig

_ONLY_COVISIT = FusionWeights(mf=0.0, covisit=1.0, trending=0.0, cold_start=0.0)
_ONLY_EMBEDDINGS = FusionWeights(mf=1.0, covisit=0.0, trending=0.0, cold_start=0.0)


def _with(config: RecommenderConfig, fusion: FusionWeights) -> RecommenderConfig:
    return dataclasses.replace(config, fusion=fusion)


#: Name -> factory(config, publish_every). Baselines first, so tables read bottom-up as gains.
MODEL_FACTORIES: dict[str, Callable[[RecommenderConfig, int], OnlineModel]] = {
    "popular": lambda config, every: MostPopular(config.max_items),
    "trending": lambda config, every: DecayedPopularity(config.half_life_s, config.max_items),
    "covisit": lambda config, every: InProcessRecommender(_with(config, _ONLY_COVISIT), every),
    "online": lambda config, every: InProcessRecommender(_with(config, _ONLY_EMBEDDINGS), every),
    "streamrec": lambda config, every: InProcessRecommender(config, every),
    "streamrec-index": lambda config, every: InProcessRecommender(
        dataclasses.replace(config, index_min_items=0), every, LiveIndex(IndexConfig(dim=config.mf.dim))),
}
"""``covisit`` (item-item co-occurrence with the user's last ``covisit_history`` items) and
``online`` (the pure embedding model) are the default model with one signal switched on;
``streamrec-index`` is the default model querying a live FAISS index for candidates instead
of scoring the whole catalogue (the worker's query path)."""

DEFAULT_MODELS = tuple(MODEL_FACTORIES)


def build_models(names: list[str], config: RecommenderConfig, publish_every: int = 1) -> dict[str, OnlineModel]:
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
    return {name: MODEL_FACTORIES[name](config, publish_every) for name in names}
