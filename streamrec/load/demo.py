"""``streamrec demo``: broker, worker, synthetic load and a live view on one machine."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress
from rich.table import Table

from streamrec.broker import EmbeddedBroker, free_port
from streamrec.config import Settings, with_section
from streamrec.errors import StreamrecError
from streamrec.eval.synthetic import SyntheticConfig, SyntheticEvents, invalid_events
from streamrec.streams.clients import open_consumer, read
from streamrec.load.producer import Message, produce, stamp_event
from streamrec.load.request import NoAnswer, request_recommendations
from streamrec.streams.topics import TopicNames, create_topics


@dataclass
class DemoStats:
    """What the demo has seen so far."""

    valid_sent: set[str] = field(default_factory=set)
    invalid_sent: int = 0
    answered: set[str] = field(default_factory=set)
    dead_lettered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    """Event ts (stamped at send) to the moment the demo received its recommendation."""
    emit_ms: list[float] = field(default_factory=list)
    """Event ts to the moment the worker emitted the recommendation (``emitted_ts``)."""
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        """Counts and latency percentiles; ``ok`` when every event got its outcome."""
        latencies = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        emitted = np.array(self.emit_ms) if self.emit_ms else np.array([np.nan])
        missing = len(self.valid_sent - self.answered)
        return {
            "events_sent": len(self.valid_sent), "invalid_sent": self.invalid_sent,
            "recommendations_received": len(self.answered & self.valid_sent),
            "missing_recommendations": missing, "dead_lettered": self.dead_lettered,
            "events_per_s": round((len(self.valid_sent) + self.invalid_sent) / elapsed_s, 1),
            "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "latency_p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "emit_p50_ms": round(float(np.percentile(emitted, 50)), 1),
            "emit_p99_ms": round(float(np.percentile(emitted, 99)), 1),
            "ok": missing == 0 and self.dead_lettered == self.invalid_sent,
        }


def _demo_messages(stats: DemoStats, invalid_every: int, max_id: int, max_bytes: int,
                   stop: threading.Event) -> Iterator[Any]:
    """Synthetic events with one invalid event of a rotating kind every ``invalid_every``.

    Ends when ``stop`` is set, so the producer thread finishes with the demo.
    """
    bad = itertools.cycle(raw for raw, _ in invalid_events(max_id, max_bytes).values())
    events = iter(SyntheticEvents(SyntheticConfig(n_users=200, n_items=300, seed=7),
                                  run_id=f"demo{int(time.time())}"))
    def send_invalid(raw: bytes) -> Message:
        stats.invalid_sent += 1
        return (b"u-bad", raw)

    def send_valid(event: dict[str, Any]) -> Message:
        stats.valid_sent.add(str(event["event_id"]))
        return stamp_event(event)

    # Callables run at send time, so only what was really sent is counted.
    for index in itertools.count(1):
        if stop.is_set():
            return
        if invalid_every and index % invalid_every == 0:
            yield functools.partial(send_invalid, next(bad))
        else:
            yield functools.partial(send_valid, next(events))


@contextlib.contextmanager
def worker_process(settings: Settings, log_path: Path, config: Path | None,
                   env: dict[str, str] | None = None, relay: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """A ``streamrec worker`` subprocess (``--relay`` with ``relay``), stopped with SIGTERM (then SIGKILL) on exit.

    ``env``: extra ``STREAMREC_*`` settings for the worker (broker, web port and data dir are options).
    """
    command = ["worker", "--web-port", str(settings.worker.web_port), "--data-dir", str(settings.worker.data_dir),
               *(["--relay"] if relay else [])]
    with streamrec_process(command, settings, log_path, config, env) as process:
        yield process


@contextlib.contextmanager
def streamrec_process(arguments: list[str], settings: Settings, log_path: Path, config: Path | None = None,
                      env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``streamrec <arguments> --broker <settings' broker>`` as a subprocess, stopped with SIGTERM (then SIGKILL) on exit."""
    command = [sys.executable, "-m", "streamrec", *arguments, "--broker", settings.kafka.broker]
    if config is not None:
        command += ["--config", str(config)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})})
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until_serving(settings: Settings, process: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Block until a request round trip succeeds; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise StreamrecError(f"the worker exited with code {process.returncode} at start")
        with contextlib.suppress(NoAnswer):
            request_recommendations(settings, "demo-probe", timeout_s=3.0)
            return time.monotonic() - started
    raise StreamrecError(f"the worker did not answer within {timeout_s:.0f}s")


def http_get(settings: Settings, path: str, timeout_s: float) -> bytes | None:
    """The body of a worker's ``GET path``, or ``None`` while it is not serving (yet)."""
    url = f"http://127.0.0.1:{settings.worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()
    except (OSError, urllib.error.URLError):
        return None


def read_metrics(settings: Settings) -> dict[str, float]:
    """The worker's Prometheus samples by name with labels, e.g. ``x_total{outcome="applied"}``."""
    body = http_get(settings, "/metrics", 5.0)
    samples: dict[str, float] = {}
    for line in (body or b"").decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _view(stats: DemoStats, progress: Progress) -> Group:
    table = Table(title="latest recommendations on streamrec.recommendations", expand=True)
    for column in ("user", "top items", "latency ms"):
        table.add_column(column)
    for rec in list(stats.recent):
        items = ", ".join(i["item_id"] for i in rec["items"][:5])
        table.add_row(rec["user_id"], items, f"{rec['latency_ms']:.0f}")
    counts = (f"sent {len(stats.valid_sent)} valid + {stats.invalid_sent} invalid · "
              f"recommendations {len(stats.answered)} · dead-lettered {stats.dead_lettered}")
    return Group(progress, counts, table)


def run_demo(settings: Settings, rate: float, duration_s: float, invalid_every: int,
             console: Console, config: Path | None = None) -> dict[str, Any]:
    """Run the whole pipeline locally for ``duration_s`` and return the summary."""
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
    embedded = EmbeddedBroker(settings.embedded.host, 0, log_path=workdir / "broker.log")
    settings = with_section(settings, "kafka", broker=embedded.url)
    settings = with_section(settings, "worker", web_port=free_port(), data_dir=workdir / "state")
    names = TopicNames.for_prefix(settings.topics.prefix)
    with embedded:
        console.print(f"embedded broker on {embedded.url}; logs in {workdir}")
        create_topics(settings)
        with worker_process(settings, workdir / "worker.log", config) as process:
            console.print(f"worker ready in {wait_until_serving(settings, process, 90):.1f}s")
            summary = _drive(settings, names, rate, duration_s, invalid_every, console)
    shutil.rmtree(settings.worker.data_dir, ignore_errors=True)  # keep the logs, not the state
    return summary


def _drive(settings: Settings, names: TopicNames, rate: float, duration_s: float,
           invalid_every: int, console: Console) -> dict[str, Any]:
    stats = DemoStats()
    consumer = open_consumer(settings, [names.recommendations, names.dead_letter], False)
    progress = Progress(console=console)
    task = progress.add_task("producing", total=int(rate * duration_s))
    stop = threading.Event()
    messages = _demo_messages(stats, invalid_every, settings.events.max_id_length,
                              settings.events.max_payload_bytes, stop)
    producer = threading.Thread(target=produce, daemon=True, args=(
        settings, names.events, messages, rate, int(rate * duration_s), None,
        lambda n: progress.advance(task, n)))
    started = time.monotonic()
    producer.start()
    def finished() -> bool:
        return (not producer.is_alive() and stats.valid_sent <= stats.answered
                and stats.dead_lettered >= stats.invalid_sent)

    redrawn = 0.0
    try:
        with Live(_view(stats, progress), console=console, auto_refresh=False) as live:
            for record in read(consumer, until_s=started + duration_s + 60, stop=finished):
                _count(stats, record, names)
                if time.monotonic() - redrawn > 0.25:  # redraw 4x/s, not per record
                    live.update(_view(stats, progress), refresh=True)
                    redrawn = time.monotonic()
            live.update(_view(stats, progress), refresh=True)
    finally:  # also on Ctrl-C: stop producing before the broker goes away
        stop.set()
        producer.join(timeout=10)
        consumer.close()
    return stats.summary(time.monotonic() - started)


def _count(stats: DemoStats, record: Any, names: TopicNames) -> None:
    value = record.value
    if record.topic == names.dead_letter:
        stats.dead_lettered += 1
    elif isinstance(value, dict) and value.get("event_id") in stats.valid_sent:
        if value["event_id"] not in stats.answered:
            stats.answered.add(value["event_id"])
            latency = record.received_ms - value["event_ts"]
            stats.latencies_ms.append(latency)
            stats.emit_ms.append(value["emitted_ts"] - value["event_ts"])
            stats.recent.appendleft({**value, "latency_ms": latency})
