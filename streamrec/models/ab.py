"""A/B arms: which users get the alternative configuration, and how a shown list scores.

>>> arm("user-1", share=0.0, salt="t"), arm("user-1", share=1.0, salt="t")
('a', 'b')
>>> round(list_gain(["x", "y", "z"], "y"), 3), list_gain(["x"], "q")
(0.631, None)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

ARMS = ("a", "b")


def arm(user_id: str, share: float, salt: str) -> str:
    """``"b"`` for a stable ``share`` of users (a hash of ``salt`` and the id), else ``"a"``."""
    return "b" if zlib.crc32(f"{salt}:{user_id}".encode()) % 10_000 < share * 10_000 else "a"


def list_gain(shown: Sequence[str], chosen: str) -> float | None:
    """The NDCG gain ``1 / log2(rank + 2)`` of ``chosen`` in the list ``shown``; ``None`` when absent (a miss)."""
    for rank, item_id in enumerate(shown):
        if item_id == chosen:
            return 1.0 / math.log2(rank + 2)
    return None
