"""``streamrec evaluate --live``: replay a dataset through a broker and real workers, score what they push.

Each event of the dataset is sent to ``streamrec.events`` (in event-time order,
keyed by user, with its own ``ts`` and an ``event_id`` naming its position);
the workers learn from it and push the user's new list to
``streamrec.recommendations``. The list pushed after a user's previous event is
the prediction for their next event, scored exactly like the offline
evaluator scores returning users (:func:`streamrec.eval.prequential.score_pushed_lists`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from streamrec.broker import EmbeddedBroker, free_port
from streamrec.config import Settings, with_section
from streamrec.errors import StreamrecError
from streamrec.eval.datasets import Interaction
from streamrec.eval.prequential import ModelReport, score_pushed_lists
from streamrec.load.demo import wait_until_serving, worker_process
from streamrec.load.producer import Message, produce
from streamrec.streams.clients import open_consumer, read
from streamrec.streams.topics import TopicNames, create_topics


def event_message(event: Interaction, event_id: str) -> Message:
    """The dataset event as a ``streamrec.events`` message keyed by its user."""
    body: dict[str, Any] = {"user_id": event.user_id, "item_id": event.item_id, "type": event.type,
                            "ts": event.ts_ms, "event_id": event_id}
    if event.value is not None:
        body["value"] = event.value
    return event.user_id.encode(), json.dumps(body, separators=(",", ":")).encode()


def evaluate_live(settings: Settings, stream: Sequence[Interaction], k: int, rate: float, workers: int = 1,
                  broker: str | None = None, config: Path | None = None, timeout_s: float = 120.0,
                  on_progress: Callable[[str, int], None] | None = None) -> tuple[dict[str, ModelReport], dict[str, Any]]:
    """Replay ``stream`` through ``workers`` worker processes; return the reports and run facts.

    The reports: ``"all"`` the pushed lists, and one per A/B arm when the workers ran a test (``[ab]``).

    Uses the broker at ``broker`` (else starts an embedded one) and fresh topics
    (a unique prefix and app id per run), so the workers start from empty state.
    ``on_progress(stage, n)`` is told of events sent (``"sent"``) and lists received (``"pushed"``).
    """
    run = f"live{int(time.time() * 1000)}"
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-live-"))
    settings = with_section(settings, "topics", prefix=f"{run}.")
    settings = with_section(settings, "worker", app_id=run)
    settings = with_section(settings, "model", k=k, max_k=max(k, settings.model.max_k))
    with contextlib.ExitStack() as stack:
        if broker is None:
            embedded = stack.enter_context(EmbeddedBroker(settings.embedded.host, 0, log_path=workdir / "broker.log"))
            broker = embedded.url
        settings = with_section(settings, "kafka", broker=broker)
        create_topics(settings)
        env = {"STREAMREC_TOPICS__PREFIX": settings.topics.prefix, "STREAMREC_WORKER__APP_ID": run,
               "STREAMREC_MODEL__K": str(k), "STREAMREC_MODEL__MAX_K": str(settings.model.max_k)}
        processes = []
        for n in range(workers):
            worker = with_section(settings, "worker", web_port=free_port(), data_dir=workdir / f"state{n}")
            log = workdir / f"worker{n}.log"
            processes.append((worker, stack.enter_context(worker_process(worker, log, config, env))))
        started = time.monotonic()
        for worker, process in processes:
            wait_until_serving(worker, process, 120)
        ready_s = time.monotonic() - started
        pushed, arms, sent_s, elapsed_s = _replay(settings, stream, run, rate, timeout_s, on_progress)
    shutil.rmtree(workdir, ignore_errors=True)
    facts = {"events": len(stream), "workers": workers, "rate": rate, "pushed": len(pushed),
             "missing": len(stream) - len(pushed), "ready_s": round(ready_s, 1),
             "send_s": round(sent_s, 1), "replay_s": round(elapsed_s, 1)}
    return score_pushed_lists(stream, pushed, k, arms), facts


def _replay(settings: Settings, stream: Sequence[Interaction], run: str, rate: float, timeout_s: float,
            on_progress: Callable[[str, int], None] | None) -> tuple[dict[int, list[str]], dict[int, str], float, float]:
    """Send every event, collect the list pushed after each; return (pushed, their A/B arms, send seconds,
    total seconds)."""
    names = TopicNames.for_prefix(settings.topics.prefix)
    consumer = open_consumer(settings, [names.recommendations], from_beginning=True)
    prefix = f"{run}-"
    pushed: dict[int, list[str]] = {}
    arms: dict[int, str] = {}
    sent_s: list[float] = []
    started = time.monotonic()

    def send() -> None:
        produce(settings, names.events, _messages(stream, prefix), rate, len(stream),
                on_progress=(lambda n: on_progress("sent", n)) if on_progress else None)
        sent_s.append(time.monotonic() - started)

    producer = threading.Thread(target=send, daemon=True)
    producer.start()
    try:
        deadline = started + len(stream) / rate + timeout_s
        for record in read(consumer, until_s=deadline, stop=lambda: len(pushed) >= len(stream)):
            event_id = record.value.get("event_id") if isinstance(record.value, dict) else None
            if isinstance(event_id, str) and event_id.startswith(prefix):
                index = int(event_id[len(prefix):])
                if index not in pushed:
                    pushed[index] = [item["item_id"] for item in record.value.get("items", [])]
                    if isinstance(record.value.get("arm"), str):
                        arms[index] = record.value["arm"]
                    if on_progress is not None:
                        on_progress("pushed", 1)
    finally:
        producer.join(timeout=30)
        consumer.close()
    if not sent_s:
        raise StreamrecError("the replay producer did not finish; see the broker and worker logs")
    return pushed, arms, sent_s[0], time.monotonic() - started


def _messages(stream: Sequence[Interaction], prefix: str) -> Iterator[Message]:
    for index, event in enumerate(stream):
        yield event_message(event, f"{prefix}{index}")
