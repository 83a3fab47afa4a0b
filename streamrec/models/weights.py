"""How much one event counts, from its type and value."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping


def event_weight(event_type: str, value: float | None, type_weights: Mapping[str, float],
                 value_weighted_types: Collection[str] = ("rating",)) -> float:
    """Weight of one event: its type's configured weight, times ``value`` for rating-like types.

    Unknown types and non-finite or non-positive results weigh 0 (the event is
    remembered as seen but does not make the item more popular).

    >>> event_weight("purchase", None, {"view": 1.0, "purchase": 8.0})
    8.0
    >>> event_weight("rating", 4.0, {"rating": 0.5})
    2.0
    """
    weight = type_weights.get(event_type, 0.0)
    if event_type in value_weighted_types:
        weight *= value if value is not None else 1.0
    return weight if math.isfinite(weight) and weight > 0 else 0.0
