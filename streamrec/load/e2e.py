"""``streamrec bench e2e``: event→recommendation latency and throughput, beside the Kafka + Faust floor.

For every rate, two steps run on fresh topics of the same size, each through a fresh
embedded broker (Tansu keeps every record in memory and its fetches slow down as it
fills, so steps on one broker would not compare) or through ``--broker``: the **relay** (``streamrec worker --relay``: forwards each event, no model) and
**streamrec** (the real workers). Each step starts its processes, waits until an event
comes back, sends a warm-up history (so the model's lists are personalised and both steps'
topics hold as many records), then produces at the fixed rate for ``duration`` seconds
and matches every output to its event by ``event_id``. Latency is the event's ``ts``
(stamped at send) to the moment the benchmark consumed the output; all processes share
this machine's clock.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from streamrec.broker import EmbeddedBroker, free_port
from streamrec.config import Settings, with_section
from streamrec.errors import StreamrecError
from streamrec.eval.synthetic import SyntheticConfig, SyntheticEvents, invalid_events
from streamrec.load.demo import read_metrics, streamrec_process, worker_process
from streamrec.load.producer import Message, produce, stamp_event
from streamrec.models.online_recommender import MODEL_VERSION
from streamrec.streams.clients import open_consumer, read
from streamrec.streams.records import Recommendation, ScoredItem
from streamrec.streams.topics import TopicNames, create_topics

TARGETS = ("relay", "streamrec")
WITH_SNAPSHOT = "streamrec+snapshot"
"""A target of ``--trainer``: streamrec serving the trainer's first snapshot, the trainer stopped
(what querying the sequence model costs, apart from training beside the worker)."""
WITH_TRAINER = "streamrec+trainer"
"""A target of ``--trainer``: streamrec serving the sequence model while the trainer runs beside it."""
SEQUENCE_TARGETS = (WITH_SNAPSHOT, WITH_TRAINER)
SNAPSHOT_WAIT_S = 300.0


@dataclass
class E2EConfig:
    """What ``bench e2e`` runs."""

    rates: list[float]
    duration_s: float = 20.0
    workers: int = 1
    warmup_events: int = 20_000
    users: int = 100_000
    items: int = 10_000
    invalid_every: int = 500
    """One invalid event (rotating kinds) in this many; streamrec must dead-letter each."""
    drain_s: float = 30.0
    """How long to wait for outputs after the producer stops."""
    find_max: bool = False
    """Then search each target's highest sustained rate (see :func:`sustained`)."""
    soak_minutes: float = 0.0
    """When > 0: instead of the rate steps, one long step per target at ``rates[0]`` (memory over time)."""
    window_s: float = 30.0
    """Latency percentiles are also reported per window of this many seconds (drift over a step)."""
    repeat: int = 1
    """Run each rate's targets this many times, interleaved (relay, streamrec, relay, streamrec...):
    the report gives the median of each figure, and each run's p50 and p99 (the machine is noisy).
    With ``find_max``, the search runs as many times too (see :func:`search_maxima`)."""
    covisit_fill: int = 0
    """Warm-up: after a view of every item, this many more views per item (random items, by users
    viewing :data:`FILL_VISITS` each), so every item's co-visit list reaches its bound and is
    pruned before the step is measured (see :func:`_fill_covisits`): lists then cost what they do
    once a catalogue has been in use for hours, and a soak's memory trend shows what still grows; 0: none."""
    trainer: bool = False
    """Also run each rate as :data:`WITH_SNAPSHOT` and :data:`WITH_TRAINER` (the sequence model's cost
    to the hot path: its queries, then the trainer beside the worker)."""

    @property
    def targets(self) -> tuple[str, ...]:
        """The processes each rate runs, in order."""
        return (*TARGETS, *SEQUENCE_TARGETS) if self.trainer else TARGETS

    @property
    def measured_s(self) -> float:
        """Seconds of load in each step."""
        return self.soak_minutes * 60 if self.soak_minutes > 0 else self.duration_s


@dataclass
class _Tally:
    """What one step's reader has seen (updated by the reader thread)."""

    prefix: str
    sent_ts: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    to_emit_ms: list[float] = field(default_factory=list)
    """Event send time to the worker's ``emitted_ts`` (streamrec's lists carry it; the relay's copies do not)."""
    to_record_ms: list[float] = field(default_factory=list)
    """Event send time to the output record's timestamp (when the worker's producer took it)."""
    answered_s: list[float] = field(default_factory=list)
    """When each latency was taken, in seconds since ``started``."""
    started: float = field(default_factory=time.monotonic)
    users: set[str] = field(default_factory=set)
    received: set[str] = field(default_factory=set)
    duplicates: int = 0
    dead_letters: int = 0
    invalid_sent: int = 0

    def on_record(self, topic: str, value: Any, dead_letter_topic: str, created_ms: int | None = None) -> None:
        if topic == dead_letter_topic:
            self.dead_letters += 1
            return
        event_id = value.get("event_id") if isinstance(value, dict) else None
        if not (isinstance(event_id, str) and event_id.startswith(self.prefix)):
            return
        if event_id in self.received:
            self.duplicates += 1
            return
        self.received.add(event_id)
        ts = value.get("event_ts", value.get("ts"))
        if isinstance(ts, int):
            self.latencies_ms.append(time.time() * 1000 - ts)
            self.answered_s.append(time.monotonic() - self.started)
            emitted = value.get("emitted_ts")
            if isinstance(emitted, int):
                self.to_emit_ms.append(emitted - ts)
            if created_ms is not None:
                self.to_record_ms.append(created_ms - ts)


def _events(config: E2EConfig, run: str, tally: _Tally | None) -> Iterator[Message | Callable[[], Message]]:
    """Synthetic events (Zipf items, ``config.users`` users, mixed types) with invalid ones mixed in."""
    valid = iter(SyntheticEvents(SyntheticConfig(n_users=config.users, n_items=config.items, seed=11), run_id=run))
    bad = itertools.cycle(raw for raw, _ in invalid_events().values())
    for n in itertools.count(1):
        if tally is not None and config.invalid_every and n % config.invalid_every == 0:
            tally.invalid_sent += 1
            yield b"u-bad", next(bad)
            continue
        event = next(valid)

        def stamped(event: dict[str, object] = event) -> Message:
            message = stamp_event(event)
            if tally is not None:
                tally.sent_ts[str(event["event_id"])] = json.loads(message[1])["ts"]
                tally.users.add(str(event["user_id"]))
            return message
        yield stamped


def _every_item(config: E2EConfig, run: str) -> Iterator[Message]:
    """One view of each of the ``config.items`` items, by as many users: a soak's warm-up
    starts with them, so the catalogue (bounded by the item count, not by users) is full
    before the memory trend is measured, instead of filling up with the Zipf tail for
    most of the soak."""
    for item in range(config.items):
        yield stamp_event({"user_id": f"u{item % config.users}", "item_id": f"i{item}", "type": "view",
                           "event_id": f"{run}-item-{item}"})


FILL_VISITS = 20
"""Items each user of :func:`_fill_covisits` views in turn."""
WARMUP_RATE = 2_000.0
"""Events/s of a step's warm-up (or its rate, if higher)."""
FILL_RATE = 5_000.0
"""Events/s of a warm-up that fills the co-visit lists (30 views per item of 10k are 300k events)."""


def _warmup(config: E2EConfig, run: str) -> tuple[int, Iterator[Message | Callable[[], Message]]]:
    """A step's warm-up: how many events, and the events. A soak or a co-visit fill begins with
    one view of every item (:func:`_every_item`), then the fill (:func:`_fill_covisits`); every
    step ends with ``config.warmup_events`` events of the load itself."""
    every_item = config.soak_minutes > 0 or config.covisit_fill > 0
    count = ((config.items if every_item else 0) + config.items * config.covisit_fill // FILL_VISITS * FILL_VISITS
             + config.warmup_events)
    return count, itertools.chain(_every_item(config, run) if every_item else (), _fill_covisits(config, run),
                                  itertools.islice(_events(config, run, None), config.warmup_events))


def _fill_covisits(config: E2EConfig, run: str) -> Iterator[Message]:
    """``config.covisit_fill`` views per item on average, uniformly random, by users who view
    :data:`FILL_VISITS` items each: every view co-visits the item with the user's previous ones,
    so with 30 per item a list is offered about 150 neighbours, past its bound of
    2 × ``model.max_neighbours`` (100 by default). The co-visit lists are bounded state that
    otherwise fills for hours with a Zipf tail; filled, a soak's memory trend shows what
    still grows."""
    rng = np.random.default_rng(29)
    for user in range(config.items * config.covisit_fill // FILL_VISITS):
        for n, item in enumerate(rng.integers(0, config.items, FILL_VISITS).tolist()):
            yield stamp_event({"user_id": f"{run}-fill-{user}", "item_id": f"i{item}", "type": "view",
                               "event_id": f"{run}-fill-{user}-{n}"})


def _cpu_percent(processes: list[psutil.Process]) -> float:
    """Percent of a core the processes used since the previous call (100 = one core)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.cpu_percent(None)
    return round(total, 1)


MEMORY_EVERY_SAMPLES = 10
"""The workers' memory parts (``streamrec_memory_bytes``) are read every this many samples."""


class _Sampler:
    """CPU and RSS of the step's worker processes, once a second, and the CPU of the broker
    (when embedded) and of this benchmark process, which share the machine. With ``metrics``
    (the workers' Prometheus samples, see :func:`_worker_samples`) each sample also holds
    where the workers' time per event went in that second (:func:`_stages_between`), and
    every ``MEMORY_EVERY_SAMPLES``-th their memory parts (:func:`_memory_figures`)."""

    def __init__(self, pids: list[int], broker_pid: int | None,
                 metrics: Callable[[], dict[str, float]] = dict) -> None:
        self.workers = [psutil.Process(pid) for pid in pids]
        self.metrics = metrics
        self._last_metrics: dict[str, float] = {}  # and the workers' CPU seconds when they were read
        self._last_cpu_s = 0.0
        self.others = {"broker": [psutil.Process(broker_pid)] if broker_pid else [], "bench": [psutil.Process()]}
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.counts: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the worker processes have used so far."""
        total = 0.0
        for process in self.workers:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def __enter__(self) -> _Sampler:
        for process in [*self.workers, *self.others["broker"], *self.others["bench"]]:
            process.cpu_percent(None)  # starts the interval
        self.cpu_at_start = self.cpu_seconds()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            rss = 0.0
            for process in self.workers:
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss / 2**20
            sent, received = self.counts()
            sample = {"t_s": round(time.monotonic() - self.started, 1), "cpu_percent": _cpu_percent(self.workers),
                      "broker_cpu_percent": _cpu_percent(self.others["broker"]),
                      "bench_cpu_percent": _cpu_percent(self.others["bench"]),
                      "rss_mb": round(rss, 1), "lag": sent - received}
            metrics: dict[str, float] = {}
            with contextlib.suppress(OSError, ValueError):  # a worker busy or gone: next time
                metrics = self.metrics()
            if metrics:
                cpu_s = self.cpu_seconds()
                if len(self.samples) % MEMORY_EVERY_SAMPLES == 0:
                    sample.update(_memory_figures(metrics))
                sample.update(_stages_between(self._last_metrics, metrics, cpu_s - self._last_cpu_s))
                self._last_metrics, self._last_cpu_s = metrics, cpu_s
            self.samples.append(sample)


def _wait_until_answering(settings: Settings, names: TopicNames, timeout_s: float) -> float:
    """Send probe events until one comes back (workers joined and serving); seconds it took."""
    started = time.monotonic()
    consumer = open_consumer(settings, [names.recommendations], from_beginning=False)
    try:
        for n in itertools.count():
            if time.monotonic() - started > timeout_s:
                raise StreamrecError(f"nothing came back within {timeout_s:.0f}s")
            probe = {"user_id": "probe", "item_id": "i0", "type": "view", "event_id": f"probe-{n}"}
            produce(settings, names.events, [stamp_event(probe)], rate=1e9)
            for record in read(consumer, until_s=time.monotonic() + 2.0):
                if isinstance(record.value, dict) and str(record.value.get("event_id", "")).startswith("probe-"):
                    return time.monotonic() - started
    finally:
        consumer.close()
    raise AssertionError("unreachable")


def _wait_for_snapshot(workers: list[Settings], timeout_s: float) -> float:
    """Wait until every worker serves a sequence-model snapshot from the trainer; seconds waited."""
    started = time.monotonic()
    while not all(read_metrics(w).get('streamrec_sequence_snapshots_total{outcome="served"}', 0) >= 1 for w in workers):
        if time.monotonic() - started > timeout_s:
            raise StreamrecError(f"no sequence-model snapshot was served within {timeout_s:.0f}s (see the trainer log)")
        time.sleep(1.0)
    return time.monotonic() - started


def _wait_until_idle(pids: list[int], timeout_s: float) -> float:
    """Wait until the workers use under a third of a core (the warm-up's item updates done); seconds waited."""
    processes = [psutil.Process(pid) for pid in pids]
    started = time.monotonic()
    _cpu_percent(processes)
    while time.monotonic() - started < timeout_s:
        time.sleep(0.5)
        if _cpu_percent(processes) < 33:
            break
    return time.monotonic() - started


def _drain(settings: Settings, names: TopicNames, count: int, prefix: str, timeout_s: float) -> int:
    """Read outputs until ``count`` events of ``prefix`` came back (or the timeout); how many did."""
    consumer = open_consumer(settings, [names.recommendations], from_beginning=True)
    seen: set[str] = set()
    try:
        for record in read(consumer, until_s=time.monotonic() + timeout_s, stop=lambda: len(seen) >= count):
            event_id = record.value.get("event_id") if isinstance(record.value, dict) else None
            if isinstance(event_id, str) and event_id.startswith(prefix):
                seen.add(event_id)
    finally:
        consumer.close()
    return len(seen)


def run_step(base: Settings, config: E2EConfig, target: str, rate: float, run: str, workdir: Path,
             say: Callable[[str], None], broker_pid: int | None = None) -> dict[str, Any]:
    """One rate on fresh topics named after ``run`` for ``target`` (``relay`` or ``streamrec``); figures as a dict."""
    settings = with_section(base, "topics", prefix=f"{run}.")
    settings = with_section(settings, "worker", app_id=run)
    names = TopicNames.for_prefix(settings.topics.prefix)
    create_topics(settings)
    env = {"STREAMREC_TOPICS__PREFIX": settings.topics.prefix, "STREAMREC_WORKER__APP_ID": run}
    if target == "relay":  # its output topic grows by as many bytes as streamrec's
        env["STREAMREC_WORKER__RELAY_RECORD_BYTES"] = str(list_record_bytes(settings, config, run))
    with contextlib.ExitStack() as stack:
        pids, workers = [], []
        for n in range(config.workers):
            worker = with_section(settings, "worker", web_port=free_port(), data_dir=workdir / f"{run}-state{n}")
            process = stack.enter_context(worker_process(worker, workdir / f"{run}-{n}.log", None, env,
                                                         relay=target == "relay"))
            pids.append(process.pid)
            workers.append(worker)
        training = stack.enter_context(contextlib.ExitStack())
        if target in SEQUENCE_TARGETS:
            training.enter_context(streamrec_process(["trainer"], settings, workdir / f"{run}-trainer.log", env=env))
        ready_s = _wait_until_answering(settings, names, 120)
        warmup, events = _warmup(config, f"{run}-warm")
        if warmup:
            produce(settings, names.events, events, rate=max(rate, FILL_RATE if config.covisit_fill else WARMUP_RATE))
            warmed = _drain(settings, names, warmup, f"{run}-warm-", 60 + warmup / 1_000)
            settled = _wait_until_idle(pids, 60)
            say(f"    {target}: ready in {ready_s:.1f} s, warm-up {warmed:,}/{warmup:,} answered, "
                f"idle after {settled:.1f} s more")
        if target in SEQUENCE_TARGETS:
            waited = _wait_for_snapshot(workers, SNAPSHOT_WAIT_S)
            say(f"    {target}: every worker serves a sequence-model snapshot ({waited:.1f} s more)")
        if target == WITH_SNAPSHOT:
            training.close()  # the snapshot stays served; only its queries are measured
        before = _worker_samples(workers)
        result = _measure(settings, names, config, run, rate, pids, broker_pid, dead_letters=target != "relay",
                          metrics=dict if target == "relay" else lambda: _worker_samples(workers))  # the relay has none
        after = _worker_samples(workers)
        result["stage_us_per_event"] = _per_event(_stages(before), _stages(after), max(result["received"], 1),
                                                  result["worker_cpu_s"])
        result.update(_freshness(before, after))
        result.update(_batch_size(before, after))
        result.update(_gc_pauses(before, after, result))
    return {"target": target, "rate": rate, "workers": config.workers, "ready_s": round(ready_s, 1), **result}


def list_record_bytes(settings: Settings, config: E2EConfig, run: str) -> int:
    """Bytes of a typical recommendation list in step ``run`` (``model.k`` items, ids as long as
    the synthetic ones get), the size the relay pads its copies to."""
    recommendation = Recommendation(
        user_id=f"u{config.users}", items=[ScoredItem(f"i{config.items}", 0.123456, "co-visit")] * settings.model.k,
        trigger="event", model_version=MODEL_VERSION, source="online", emitted_ts=int(time.time() * 1000),
        event_ts=int(time.time() * 1000), event_id=f"{run}-{10**6}")
    return len(recommendation.to_json())


def _worker_samples(workers: list[Settings]) -> dict[str, float]:
    """The workers' Prometheus samples, summed over the workers."""
    totals: dict[str, float] = {}
    for worker in workers:
        for name, value in read_metrics(worker).items():
            totals[name] = totals.get(name, 0.0) + value
    return totals


def _memory_figures(samples: dict[str, float]) -> dict[str, Any]:
    """``memory_mb``: MB per part of the workers' memory (``streamrec_memory_bytes``), and
    ``catalog_neighbours``: the co-visit entries their item replicas hold, which that memory
    grows with once every item is known (none of either for the relay)."""
    prefix = 'streamrec_memory_bytes{part="'
    parts = {name[len(prefix):].split('"')[0]: round(value / 2**20, 1)
             for name, value in samples.items() if name.startswith(prefix)}
    if not parts:
        return {}
    return {"memory_mb": parts, "catalog_neighbours": int(samples.get("streamrec_catalog_neighbours", 0))}


def _stages(samples: dict[str, float]) -> dict[str, float]:
    """Seconds per stage (``streamrec_stage_seconds_total``; none for the relay)."""
    prefix = 'streamrec_stage_seconds_total{stage="'
    return {name[len(prefix):].split('"')[0]: value for name, value in samples.items() if name.startswith(prefix)}


_APPLIED = 'streamrec_events_in_total{outcome="applied"}'


def _stages_between(before: dict[str, float], after: dict[str, float], cpu_s: float) -> dict[str, Any]:
    """The events the workers applied between two reads of their samples (``applied``) and
    :func:`_per_event` of them (``stage_us``), ``cpu_s`` being the workers' CPU in between;
    nothing before the first read or without events. Second by second, they show which stage
    grows when a worker falls behind mid-step."""
    applied = after.get(_APPLIED, 0.0) - before.get(_APPLIED, 0.0)
    if not before or applied <= 0:
        return {}
    return {"applied": int(applied), "stage_us": _per_event(_stages(before), _stages(after), applied, cpu_s)}


def _freshness(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Item freshness during the step (owner's write → searchable in a worker's index) and the
    events' age when the worker started on them: the bucket bounds p50 and p99 fall under, in ms
    (``streamrec_item_freshness_seconds``, ``streamrec_event_age_seconds``)."""
    figures: dict[str, float] = {}
    for metric, count, name in (("streamrec_item_freshness_seconds", "item_updates_indexed", "freshness"),
                                ("streamrec_event_age_seconds", "events_aged", "event_age")):
        prefix = f'{metric}_bucket{{le="'
        buckets = sorted((float(key[len(prefix):].split('"')[0]), after[key] - before.get(key, 0.0))
                         for key in after if key.startswith(prefix))
        total = buckets[-1][1] if buckets else 0.0
        if total > 0:
            bound = {q: next(le for le, n in buckets if n >= q * total) for q in (0.5, 0.99)}
            figures.update({count: int(total),
                            **{f"{name}_p{round(q * 100)}_ms_at_most": le * 1000 for q, le in bound.items()}})
    return figures


def _batch_size(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean events per micro-batch during the step (``streamrec_batch_events``)."""
    batches = after.get("streamrec_batch_events_count", 0.0) - before.get("streamrec_batch_events_count", 0.0)
    events = after.get("streamrec_batch_events_sum", 0.0) - before.get("streamrec_batch_events_sum", 0.0)
    return {"mean_batch_events": round(events / batches, 1)} if batches > 0 else {}


def _gc_pauses(before: dict[str, float], after: dict[str, float], result: dict[str, Any]) -> dict[str, float]:
    """The garbage collector's pauses during the step (``streamrec_gc_pause_seconds``): µs per
    answered event over every generation, and the full collections' number and mean in ms."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    prefix = "streamrec_gc_pause_seconds_sum{"
    total = sum(delta(name) for name in after if name.startswith(prefix))
    full = delta('streamrec_gc_pause_seconds_count{generation="2"}')
    if not any(name.startswith(prefix) for name in after):
        return {}
    return {"gc_us_per_event": round(total / max(result["received"], 1) * 1e6, 1), "gc_full_collections": int(full),
            "gc_full_pause_ms_mean": round(delta('streamrec_gc_pause_seconds_sum{generation="2"}') / full * 1000, 1)
            if full else 0.0}


def _per_event(before: dict[str, float], after: dict[str, float], events: float, cpu_s: float) -> dict[str, float]:
    """Microseconds per event between two readings of the stages' seconds (:func:`_stages`): each
    stage, the rest of the workers' ``cpu_s`` CPU seconds, and that CPU in total."""
    stages = {stage: round((after[stage] - before.get(stage, 0.0)) / events * 1e6, 1) for stage in after}
    total = cpu_s / events * 1e6
    return {**stages, "other (Faust, Kafka clients, event loop)": round(total - sum(stages.values()), 1),
            "worker CPU": round(total, 1)}


def _measure(settings: Settings, names: TopicNames, config: E2EConfig, run: str, rate: float,
             pids: list[int], broker_pid: int | None, dead_letters: bool,
             metrics: Callable[[], dict[str, float]] = dict) -> dict[str, Any]:
    """Produce at ``rate`` and match outputs until every valid event is answered (and, with
    ``dead_letters``, every invalid one dead-lettered) or the drain time is up."""
    tally = _Tally(prefix=f"{run}-m-")
    count = int(rate * config.measured_s)
    events = itertools.islice(_events(config, f"{run}-m", tally), count)
    consumer = open_consumer(settings, [names.recommendations, names.dead_letter], from_beginning=False)
    report_box: list[Any] = []
    producer = threading.Thread(target=lambda: report_box.append(produce(settings, names.events, events, rate)),
                                daemon=True)
    valid = count - count // config.invalid_every if config.invalid_every else count
    with _Sampler(pids, broker_pid, metrics) as sampler:
        sampler.counts = lambda: (len(tally.sent_ts), len(tally.received))
        started = tally.started = time.monotonic()
        producer.start()
        try:
            deadline = started + config.measured_s + config.drain_s
            for record in read(consumer, until_s=deadline,
                               stop=lambda: not producer.is_alive() and len(tally.received) >= valid
                               and (not dead_letters or tally.dead_letters >= tally.invalid_sent)):
                tally.on_record(record.topic, record.value, names.dead_letter, record.created_ms)
        finally:
            producer.join(30)
            consumer.close()
        elapsed_s = time.monotonic() - started
        worker_cpu_s = sampler.cpu_seconds() - sampler.cpu_at_start
    sent = report_box[0].sent if report_box else 0
    latencies = np.array(tally.latencies_ms) if tally.latencies_ms else np.array([np.nan])
    samples = sampler.samples
    return {
        "sent": sent, "valid_sent": len(tally.sent_ts), "invalid_sent": tally.invalid_sent,
        "received": len(tally.received), "missing": len(tally.sent_ts) - len(tally.received),
        "duplicates": tally.duplicates, "dead_lettered": tally.dead_letters,
        "achieved_send_rate": round(report_box[0].rate, 1) if report_box else 0.0,
        "achieved_output_rate": round(len(tally.received) / max(elapsed_s, 1e-9), 1),
        "elapsed_s": round(elapsed_s, 1), "worker_cpu_s": round(worker_cpu_s, 2),
        **{f"latency_p{q}_ms": round(float(np.percentile(latencies, q)), 1) for q in (50, 95, 99)},
        "latency_max_ms": round(float(np.max(latencies)), 1),
        **{f"{name}_p{q}_ms": round(float(np.percentile(values, q)), 1) for q in (50, 99)
           for name, values in (("emit", tally.to_emit_ms), ("record", tally.to_record_ms)) if values},
        "lag_max": max((s["lag"] for s in samples), default=0),
        **{f"{key}_mean": round(float(np.mean([s[key] for s in samples])) if samples else 0.0, 1)
           for key in ("cpu_percent", "broker_cpu_percent", "bench_cpu_percent")},
        "rss_mb_max": max((s["rss_mb"] for s in samples), default=0.0),
        "distinct_users": len(tally.users), **_rss_trend(samples),
        "windows": _windows(tally, config.window_s),
        "timeline": samples, "latencies_ms": [round(x, 2) for x in tally.latencies_ms],
    }


def _windows(tally: _Tally, window_s: float) -> list[dict[str, float]]:
    """Latency p50/p99 and answers per ``window_s`` of the step (drift: a filling broker, a growing worker)."""
    if not tally.latencies_ms:
        return []
    latencies, at = np.array(tally.latencies_ms), np.array(tally.answered_s)
    windows = []
    for start in np.arange(0.0, float(at.max()) + 1e-9, window_s):
        inside = latencies[(at >= start) & (at < start + window_s)]
        if inside.size:
            windows.append({"t_s": round(float(start), 1), "answered": int(inside.size),
                            "p50_ms": round(float(np.percentile(inside, 50)), 1),
                            "p99_ms": round(float(np.percentile(inside, 99)), 1)})
    return windows


RSS_WARMUP_SHARE = 1 / 3
"""The RSS trend is fitted after this share of a step (state and caches filling up is expected)."""


def _rss_trend(samples: list[dict[str, float]]) -> dict[str, float]:
    """RSS after the warm-up share, at the end, and its least-squares slope in MB per minute in between."""
    if len(samples) < 6:
        return {}
    end = samples[-1]["t_s"]
    after = [s for s in samples if s["t_s"] >= end * RSS_WARMUP_SHARE]
    t = np.array([s["t_s"] for s in after]) / 60
    rss = np.array([s["rss_mb"] for s in after])
    slope = float(np.polyfit(t, rss, 1)[0]) if np.ptp(t) > 0 else 0.0
    read = [s for s in after if s.get("memory_mb")]
    memory = {"memory_mb_after_warmup": read[0]["memory_mb"], "memory_mb_end": read[-1]["memory_mb"],
              "catalog_neighbours_after_warmup": read[0].get("catalog_neighbours", 0),
              "catalog_neighbours_end": read[-1].get("catalog_neighbours", 0)} if read else {}
    return {"rss_mb_after_warmup": after[0]["rss_mb"], "rss_mb_end": samples[-1]["rss_mb"],
            "rss_slope_mb_per_min": round(slope, 2), **memory}


def sustained(step: dict[str, Any]) -> bool:
    """Whether a step kept up: every valid event answered and the backlog never above one second of events."""
    return step["missing"] == 0 and step["lag_max"] <= step["rate"]


def benchmark_e2e(settings: Settings, config: E2EConfig, broker: str | None = None,
                  say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every rate, relay then streamrec, through ``broker`` or a fresh embedded broker per step; all steps' figures.

    With ``config.find_max``, each target's highest sustained rate is then searched for
    (x1.5 steps from its best fixed rate until a step fails, then bisecting until the highest
    rate that kept up is within 20% of the lowest that did not; halving from the lowest rate
    when none kept up), ``config.repeat`` times (:func:`search_maxima`). With ``config.soak_minutes``, one long step per
    target at the first rate instead (RSS trend, latency drift per window).
    """
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-e2e-"))
    steps: list[dict[str, Any]] = []
    bench_id = f"e2e{time.time_ns() // 1_000_000 % 10**8}"  # fresh topic names, even on a shared broker
    counter = itertools.count()

    def step(target: str, rate: float, phase: str) -> dict[str, Any]:
        say(f"{rate:,.0f} events/s, {target}{phase}: starting on fresh topics...")
        number = next(counter)
        with contextlib.ExitStack() as stack:
            url, pid = broker, None
            if url is None:  # a fresh embedded broker per step: it keeps every record and slows as it fills
                embedded = stack.enter_context(EmbeddedBroker(settings.embedded.host, 0,
                                                              log_path=workdir / f"broker-{number}.log"))
                url, pid = embedded.url, embedded.pid
            result = run_step(with_section(settings, "kafka", broker=url), config, target, rate,
                              f"{bench_id}-{number}-{target.replace('+', '-')}", workdir, say, pid)
        say(f"    {target}: p50 {result['latency_p50_ms']} ms, p99 {result['latency_p99_ms']} ms, "
            f"{result['received']:,}/{result['valid_sent']:,} answered, output "
            f"{result['achieved_output_rate']:,.0f}/s, max lag {result['lag_max']:,}")
        steps.append({**result, "phase": phase.strip(" ()") or "fixed"})
        return result

    soak = config.soak_minutes > 0
    for rate in config.rates[:1] if soak else config.rates:
        for _ in range(1 if soak else config.repeat):
            for target in config.targets:
                step(target, rate, " (soak)" if soak else "")
    maxima, searches = search_maxima(config.repeat, list(steps), step) if config.find_max and not soak else ({}, {})
    return {"config": dict(vars(config)), "logs": str(workdir), "steps": steps,
            "max_sustained": maxima, "max_sustained_runs": searches}


def search_maxima(repeat: int, fixed: list[dict[str, Any]], step: Callable[[str, float, str], dict[str, Any]]
                  ) -> tuple[dict[str, float | None], dict[str, list[float | None]]]:
    """Each target's highest sustained rate, searched ``repeat`` times: the median, and each search's.

    The searches alternate between the targets (relay, streamrec, relay, ...), so a machine
    that slows down mid-run weighs on both, and each starts from the fixed-rate steps alone:
    one search's luck does not steer the next. The median is the lower middle value, a rate
    that was measured (``None`` when the target kept up with no rate in most searches).
    """
    searches: dict[str, list[float | None]] = {target: [] for target in TARGETS}
    for _ in range(repeat):
        for target in TARGETS:
            searches[target].append(_find_max(target, fixed, step))
    return {target: statistics.median_low([rate or 0 for rate in found]) or None
            for target, found in searches.items()}, searches


def _find_max(target: str, steps: list[dict[str, Any]], step: Callable[[str, float, str], dict[str, Any]]) -> float | None:
    """The highest rate ``target`` sustained, searching up from its fixed-rate steps."""
    fixed = [s for s in steps if s["target"] == target]
    good = max((s["rate"] for s in fixed if sustained(s)), default=None)
    bad = min((s["rate"] for s in fixed if not sustained(s) and (good is None or s["rate"] > good)), default=None)
    if good is None:  # nothing kept up: halve from the lowest rate, then bisect once as below
        rate = min(s["rate"] for s in fixed) / 2
        while good is None and rate >= 25:
            if sustained(step(target, rate, " (search)")):
                good, bad = rate, rate * 2
            rate /= 2
        if good is None:
            return None
    while bad is None:
        rate = round(good * 1.5)
        if sustained(step(target, rate, " (search)")):
            good = rate
        else:
            bad = rate
    # Bisect until the bracket is within 20%. One step halfway back left wide brackets:
    # 2,000 sustained and 5,000 not, 3,500 failed, and 2,000 stood where 2,800 holds.
    while bad / good > 1.2:
        middle = round((good + bad) / 2)
        if middle in (good, bad):
            break
        if sustained(step(target, middle, " (search)")):
            good = middle
        else:
            bad = middle
    return good
