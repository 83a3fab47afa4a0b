"""The models `streamrec evaluate` can compare, built by name."""

from __future__ import annotations

from collections.abc import Callable

from streamrec.models.baselines import (
    Blend,
    CoOccurrence,
    DecayedPopularity,
    MostPopular,
    OnlineModel,
)
from streamrec.models.online_mf import OnlineMF, OnlineMFConfig

#: Name -> factory(seed, half_life_s). Baselines first, so tables read bottom-up as gains.
MODEL_FACTORIES: dict[str, Callable[[int, float], OnlineModel]] = {
    "popular": lambda seed, half_life_s: MostPopular(),
    "trending": lambda seed, half_life_s: DecayedPopularity(half_life_s),
    "covisit": lambda seed, half_life_s: CoOccurrence(),
    "online": lambda seed, half_life_s: OnlineMF(OnlineMFConfig(seed=seed)),
    "online+trending": lambda seed, half_life_s: Blend(OnlineMF(OnlineMFConfig(seed=seed)),
                                                       DecayedPopularity(half_life_s)),
}


def build_models(names: list[str], seed: int, half_life_s: float) -> dict[str, OnlineModel]:
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
    return {name: MODEL_FACTORIES[name](seed, half_life_s) for name in names}
