"""``streamrec bench restart``: how fast a restarted worker answers, with and without its index snapshot.

A worker that stops cleanly leaves a snapshot of its vector index; the next start loads
it and re-reads the item-state topic (unchanged vectors are no-ops). Without the snapshot
the same re-read puts every item in the index's exact delta, and the FAISS structure is
rebuilt in the background. Both answer as soon as the item replica has caught up; the
difference is the search cost until the rebuild lands and the CPU the rebuild takes.

The benchmark writes a synthetic catalogue (clustered vectors, as ``bench index``) to the
item-state topic, seeds users with events, then restarts one worker several times,
alternating the two cases, and records for each start: seconds from process start to
the first answered ``GET /recommendations/{user}``, seconds until the index holds every
item in its FAISS structure, and request latency over the first seconds of serving.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.broker import EmbeddedBroker, free_port
from streamrec.config import Settings, with_section
from streamrec.errors import StreamrecError
from streamrec.index.benchmark import synthetic_catalogue
from streamrec.load.demo import http_get, read_metrics, worker_process
from streamrec.load.producer import produce, stamp_event
from streamrec.models.items import OwnedItem
from streamrec.streams.records import encode_item_state
from streamrec.streams.snapshot import REPLICA_FILE
from streamrec.streams.topics import TopicNames, create_topics

MODES = ("snapshot", "topic")
"""``snapshot``: the snapshot of the last clean stop is kept; ``topic``: it is deleted first."""
_INFO_LOG = {"STREAMREC_WORKER__LOG_LEVEL": "info"}  # the worker logs its snapshot load at info


def _publish_catalogue(settings: Settings, items: int, dim: int) -> list[str]:
    vectors, _ = synthetic_catalogue(items, dim, seed=1)
    ids = [f"item-{n}" for n in range(items)]
    config = settings.model.recommender(settings.events.dedup_window).items
    names = TopicNames.for_prefix(settings.topics.prefix)
    messages = ((item_id.encode(), encode_item_state(item_id, OwnedItem(1.0, 0, vector).published(config)))
                for item_id, vector in zip(ids, vectors.astype(np.float32), strict=True))
    report = produce(settings, names.item_state, messages, rate=1e9)
    if report.errors:
        raise StreamrecError(f"writing the catalogue failed: {report.error_samples}")
    return ids


def _seed_users(settings: Settings, ids: list[str], users: int, per_user: int) -> None:
    rng = np.random.default_rng(2)
    names = TopicNames.for_prefix(settings.topics.prefix)
    events = [stamp_event({"event_id": f"seed-{u}-{n}", "user_id": f"user-{u}", "type": "purchase",
                           "item_id": ids[int(rng.integers(len(ids)))]})
              for u in range(users) for n in range(per_user)]
    produce(settings, names.events, events, rate=1e9)
    deadline = time.monotonic() + 120
    while read_metrics(settings).get('streamrec_events_in_total{outcome="applied"}', 0) < len(events):
        if time.monotonic() > deadline:
            raise StreamrecError("the worker did not apply the seeding events within 120 s")
        time.sleep(0.5)


def _one_start(settings: Settings, workdir: Path, mode: str, run: int, users: int, items: int,
               observe_s: float, timeout_s: float) -> dict[str, Any]:
    if mode == "topic":
        shutil.rmtree(Path(settings.worker.data_dir) / "index", ignore_errors=True)
        (Path(settings.worker.data_dir) / REPLICA_FILE).unlink(missing_ok=True)
    delta_limit = _delta_limit(settings, items)
    log_path = workdir / f"worker-{run}-{mode}.log"
    started = time.monotonic()
    first_answer_s = complete_s = None
    latencies_ms: list[float] = []
    with worker_process(settings, log_path, None, _INFO_LOG) as process:
        request = 0
        while time.monotonic() - started < timeout_s:
            if process.poll() is not None:
                raise StreamrecError(f"the worker exited with code {process.returncode}; see {log_path}")
            now = time.monotonic()
            if first_answer_s is None or now - started < first_answer_s + observe_s:
                body = http_get(settings, f"/recommendations/user-{request % users}", timeout_s)
                if body is None:
                    time.sleep(0.05)
                    continue
                request += 1
                if first_answer_s is None:
                    first_answer_s = time.monotonic() - started
                else:
                    latencies_ms.append((time.monotonic() - now) * 1000)
            if complete_s is None and _index_complete(read_metrics(settings), items, delta_limit):
                complete_s = time.monotonic() - started
            if complete_s is not None and first_answer_s is not None and now - started >= first_answer_s + observe_s:
                break
            if first_answer_s is not None and now - started >= first_answer_s + observe_s:
                time.sleep(0.2)  # only waiting for the index now
        stop_started = time.monotonic()
    loaded = [line.split("] ")[-1].strip() for line in log_path.read_text(errors="replace").splitlines()
              if "snapshot loaded" in line]
    return {
        "mode": mode, "first_answer_s": _round(first_answer_s), "index_complete_s": _round(complete_s),
        "requests": len(latencies_ms),
        "request_p50_ms": _round(float(np.percentile(latencies_ms, 50)) if latencies_ms else None),
        "request_p99_ms": _round(float(np.percentile(latencies_ms, 99)) if latencies_ms else None),
        "stop_s": _round(time.monotonic() - stop_started), "snapshot_loaded": loaded,
    }


def _delta_limit(settings: Settings, items: int) -> float:
    index = settings.index.config(settings.model.dim)
    return max(index.rebuild_delta_items, index.rebuild_delta_share * items)


def _index_complete(samples: dict[str, float], items: int, delta_limit: float) -> bool:
    """Every item searchable and at most a delta the index would not rebuild for, no rebuild running."""
    return (samples.get("streamrec_index_items", 0) >= items and not samples.get("streamrec_index_rebuilding", 1)
            and samples.get("streamrec_index_delta_items", items) <= delta_limit)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def benchmark_restart(settings: Settings, items: int, rounds: int, users: int = 50, observe_s: float = 10.0,
                      timeout_s: float = 300.0, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Restart a worker ``rounds`` times per mode on an embedded broker; medians per mode and every start."""
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-restart-"))
    embedded = EmbeddedBroker(settings.embedded.host, 0, log_path=workdir / "broker.log")
    settings = with_section(settings, "kafka", broker=embedded.url)
    settings = with_section(settings, "worker", web_port=free_port(), data_dir=workdir / "state")
    starts: list[dict[str, Any]] = []
    with embedded:
        create_topics(settings)
        say(f"writing {items:,} item vectors ({settings.model.dim} dims) to the item-state topic...")
        ids = _publish_catalogue(settings, items, settings.model.dim)
        say(f"first start (builds the index from the topic), seeding {users} users...")
        with worker_process(settings, workdir / "worker-seed.log", None, _INFO_LOG):
            deadline, delta_limit = time.monotonic() + timeout_s, _delta_limit(settings, items)
            while http_get(settings, "/recommendations/user-0", timeout_s) is None:
                if time.monotonic() > deadline:
                    raise StreamrecError(f"the first worker did not serve within {timeout_s:.0f}s; see {workdir}")
                time.sleep(0.2)
            _seed_users(settings, ids, users, per_user=5)
            say("waiting for the first index build (the snapshot of a long-running worker holds a built index)...")
            while not _index_complete(read_metrics(settings), items, delta_limit):
                if time.monotonic() > deadline:
                    raise StreamrecError(f"the first index build did not finish within {timeout_s:.0f}s; see {workdir}")
                time.sleep(0.5)
        for run in range(rounds):
            for mode in MODES if run % 2 == 0 else MODES[::-1]:  # alternate which goes first
                result = _one_start(settings, workdir, mode, run, users, items, observe_s, timeout_s)
                say(f"  run {run + 1} {mode:8s}: first answer {result['first_answer_s']} s, index complete "
                    f"{result['index_complete_s']} s, requests p50 {result['request_p50_ms']} ms "
                    f"(p99 {result['request_p99_ms']}) over the first {observe_s:g} s")
                starts.append(result)
    summary = {mode: {key: _median([s[key] for s in starts if s["mode"] == mode])
                      for key in ("first_answer_s", "index_complete_s", "request_p50_ms", "request_p99_ms")}
               for mode in MODES}
    shutil.rmtree(workdir / "state", ignore_errors=True)
    return {"items": items, "dim": settings.model.dim, "rounds": rounds, "observe_s": observe_s,
            "logs": str(workdir), "median": summary, "starts": starts}


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None
