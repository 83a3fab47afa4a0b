"""What one recommendation list costs a worker, with co-visit lists short and full.

    python docs/bench/micro/recommend_lists.py [--json FILE]

Run it once per version to compare two versions side by side (``PYTHONPATH=<other
checkout>`` for the other one), alternating, on an otherwise idle machine.

A catalogue of 10k items learnt by the model that runs in the worker
(:class:`~streamrec.models.online_recommender.InProcessRecommender`, the default
configuration): every item once, then a Zipf-popular stream (exponent 1.1, as many
events as items) from 5,000 users. "short" stops there: few co-visits, as in a
benchmark's first minutes. "full" then adds 30 views per item, as ``bench e2e
--fill-covisits 30`` does before a soak: every co-visit list reaches its bound, and the
popular items have thousands of followers (items whose lists hold them), as after hours
of traffic. "new" is the lists of as many users again with one event each, after "short":
most of a load test's 100k users (trending weighs half of their lists). Each round picks 50 random users of the Zipf stream (their latest items
are popular, as a live load's are), as a worker's micro-batch, and times the batch's
lists; the figures are medians over the rounds, in µs per list (the batch's share of
the product included), with OpenBLAS on one thread and glibc's mmap threshold fixed at
128 KiB, as in a worker.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the BLAS thread setting)

from streamrec.models.online_recommender import (  # noqa: E402
    InProcessRecommender,
    RecommenderConfig,
    recommend_many,
)
from streamrec.models.user_state import UserState  # noqa: E402
from streamrec.streams.memory import fix_mmap_threshold  # noqa: E402

ITEMS, USERS, BATCH, ROUNDS, FILL_VIEWS, STREAM_AFTER_FILL = 10_000, 5_000, 50, 200, 30, 3
WORKER_MMAP_THRESHOLD_KB = 128  # worker.malloc_mmap_threshold_kb's default


def short_model() -> InProcessRecommender:
    """The default model after every item once and then a Zipf stream of as many events."""
    recommender = InProcessRecommender(RecommenderConfig(), publish_every=200)
    for item in range(ITEMS):
        recommender.learn_one(f"u{item % USERS}", f"i{item}", 1.0, 0)
    stream(recommender, ITEMS)
    return recommender


def stream(recommender: InProcessRecommender, events: int, seed: int = 0) -> None:
    """``events`` Zipf-popular events from the stream's users."""
    rng = np.random.default_rng(seed)
    for user, item in zip(rng.integers(0, USERS, events).tolist(), (rng.zipf(1.1, events) % ITEMS).tolist(),
                          strict=True):
        recommender.learn_one(f"u{user}", f"i{item}", 1.0, 0)
    recommender.publish()


def new_users(recommender: InProcessRecommender, seed: int = 2) -> None:
    """As many users again, each with one Zipf-popular event: most of a load test's 100k users."""
    rng = np.random.default_rng(seed)
    for user, item in enumerate((rng.zipf(1.1, USERS) % ITEMS).tolist()):
        recommender.learn_one(f"n{user}", f"i{item}", 1.0, 0)
    recommender.publish()


def fill(recommender: InProcessRecommender, views: int, seed: int = 0) -> None:
    """``views`` more views per item, in random order, from users who view 20 items each."""
    rng = np.random.default_rng(seed)
    for n, item in enumerate(rng.permutation(np.repeat(np.arange(ITEMS), views)).tolist()):
        recommender.learn_one(f"filler{n // 20}", f"i{item}", 1.0, 0)
    recommender.publish()


def time_lists(recommender: InProcessRecommender, prefix: str = "u") -> float:
    """Median µs per list of users whose id starts with ``prefix``, the batch's embedding scores included."""
    catalog, config = recommender.catalog, recommender.config
    # The users of the Zipf streams: their latest items are popular ones, as a live load's are.
    states: list[UserState] = [state for user, state in recommender.users.items() if user.startswith(prefix)]
    chooser = random.Random(1)
    lists = []
    for round_ in range(ROUNDS + 20):
        batch = chooser.sample(states, BATCH)
        started = time.perf_counter()
        recommend_many(batch, catalog, 10, config)
        if round_ >= 20:  # the first rounds warm the caches up
            lists.append((time.perf_counter() - started) / BATCH * 1e6)
    return round(statistics.median(lists), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    fix_mmap_threshold(WORKER_MMAP_THRESHOLD_KB)  # as a worker does at start
    results: dict[str, dict[str, float]] = {}
    recommender = short_model()
    new_users(recommender)
    for name, views, prefix in (("new", 0, "n"), ("short", 0, "u"), ("full", FILL_VIEWS, "u")):
        if views:
            fill(recommender, views)
            stream(recommender, STREAM_AFTER_FILL * ITEMS, seed=1)
        results[name] = {"list_us": time_lists(recommender, prefix),
                         "co_visit_pairs": recommender.catalog.neighbour_pairs}
        print(f"{name:5}: {results[name]['co_visit_pairs']:,} co-visit pairs; {results[name]['list_us']} µs per "
              f"list in batches of {BATCH} (median of {ROUNDS} batches)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
