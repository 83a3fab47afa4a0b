"""The load producer: publish events at a target rate and report what was achieved.

Users run it (``streamrec produce``) against their own cluster; the demo and
benchmarks reuse it. Event time ``ts`` is stamped at send time, so a consumer
of ``streamrec.recommendations`` can measure event->recommendation latency.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.config import Settings
from streamrec.errors import StreamrecError
from streamrec.streams.clients import make_producer

#: A message as (key, value) bytes; key ``None`` lets the producer pick a partition.
Message = tuple[bytes | None, bytes]


@dataclass(slots=True)
class ProduceReport:
    """What a producer run achieved."""

    sent: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Achieved events per second."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def stamp_event(event: dict[str, object]) -> Message:
    """Key an event dict by its user and stamp ``ts`` (epoch ms) now, unless it has one."""
    if "ts" not in event:
        event = {**event, "ts": int(time.time() * 1000)}
    key = event.get("user_id")
    return (str(key).encode() if key is not None else None,
            json.dumps(event, separators=(",", ":")).encode())


def produce(settings: Settings, topic: str, messages: Iterable[Message | Callable[[], Message]],
            rate: float, count: int | None = None, duration_s: float | None = None,
            on_progress: Callable[[int], None] | None = None) -> ProduceReport:
    """Send ``messages`` to ``topic`` at ``rate`` per second until ``count`` or ``duration_s``.

    A callable in ``messages`` is called at send time (so timestamps are fresh).
    Stops early when ``messages`` runs out. Send errors are counted, not raised.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}; pass --rate 100 for 100 events/s")
    producer = make_producer(settings)
    report = ProduceReport()

    def on_error(exc: BaseException) -> None:
        report.errors += 1
        if len(report.error_samples) < 5:
            report.error_samples.append(repr(exc))

    started = time.perf_counter()
    try:
        for index, message in enumerate(messages):
            if count is not None and index >= count:
                break
            due = started + index / rate
            now = time.perf_counter()
            if duration_s is not None and now - started >= duration_s:
                break
            if due > now:
                time.sleep(due - now)
            key, value = message() if callable(message) else message
            producer.send(topic, key, value, on_error)
            report.sent += 1
            if on_progress is not None:
                on_progress(1)
        producer.flush()
    finally:
        report.elapsed_s = time.perf_counter() - started
        producer.close()
    report.sent -= report.errors
    return report


class EventFileError(StreamrecError):
    """An event file cannot be read as events."""


def read_event_file(path: Path) -> Iterator[dict[str, object]]:
    """Events from a JSONL file (one object per line) or a CSV/TSV file with a header row.

    CSV cells are text; numeric ``ts`` and ``value`` cells become numbers.
    Each event is sent as it is: the worker validates and dead-letters, not the producer.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with path.open() as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError as exc:
                        raise EventFileError(f"{path}:{number}: not a JSON object ({exc})") from None
    elif suffix in (".csv", ".tsv"):
        with path.open(newline="") as handle:
            dialect = "excel-tab" if suffix == ".tsv" else "excel"
            for row in csv.DictReader(handle, dialect=dialect):
                yield {k: _csv_cell(k, v) for k, v in row.items() if v not in (None, "")}
    else:
        raise EventFileError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .csv")


def _csv_cell(column: str, text: str) -> object:
    """``ts`` and ``value`` cells as numbers when they are numbers; everything else as text."""
    if column in ("ts", "value"):
        try:
            number = float(text)
        except ValueError:
            return text  # e.g. an ISO-8601 ts, or garbage the worker will dead-letter
        return int(number) if column == "ts" and number.is_integer() else number
    return text
