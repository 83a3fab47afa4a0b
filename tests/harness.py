"""Broker and worker harness for the integration and reliability tests.

A real broker for the session, real worker subprocesses per test.

The embedded broker starts once per session, unless ``STREAMREC_TEST_BROKER``
names a running Kafka-compatible broker (``host:port``). Every test gets its
own topic prefix, consumer group (app id) and state directory, so tests never
see each other's records.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrec.broker import EmbeddedBroker, free_port
from streamrec.config import Settings, load_settings
from streamrec.streams.clients import Received, make_producer, open_consumer, read
from streamrec.load.demo import wait_until_serving
from streamrec.streams.topics import TopicNames, create_topics

TEST_BROKER_ENV = "STREAMREC_TEST_BROKER"


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the broker all integration tests share."""
    if os.environ.get(TEST_BROKER_ENV):
        yield os.environ[TEST_BROKER_ENV]
        return
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(port=0, log_path=log) as broker:
        yield broker.url


@pytest.fixture
def settings(broker_url: str, tmp_path: Path) -> Settings:
    """Settings isolated to this test: own prefix, app id, state dir and web port; topics created."""
    run = uuid.uuid4().hex[:8]
    built = load_settings(
        kafka={"broker": broker_url},
        topics={"prefix": f"it{run}.", "partitions": 4},
        worker={"app_id": f"streamrec-it{run}", "data_dir": tmp_path / "state",
                "web_port": free_port(), "log_level": "info"},
        model={"k": 5, "item_publish_interval_ms": 20},
    )
    create_topics(built)
    return built


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a ``streamrec worker`` subprocess use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update({
        "STREAMREC_KAFKA__BROKER": settings.kafka.broker,
        "STREAMREC_TOPICS__PREFIX": settings.topics.prefix,
        "STREAMREC_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "STREAMREC_WORKER__APP_ID": settings.worker.app_id,
        "STREAMREC_WORKER__DATA_DIR": str(settings.worker.data_dir),
        "STREAMREC_WORKER__WEB_PORT": str(settings.worker.web_port),
        "STREAMREC_WORKER__LOG_LEVEL": settings.worker.log_level,
        "STREAMREC_MODEL__K": str(settings.model.k),
        "STREAMREC_MODEL__ITEM_PUBLISH_INTERVAL_MS": str(settings.model.item_publish_interval_ms),
        "STREAMREC_MODEL__INDEX_MIN_ITEMS": str(settings.model.index_min_items),
    })
    return env


class WorkerProcess:
    """A real ``streamrec worker`` subprocess with its log in the test's tmp dir."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> WorkerProcess:
        """Start the worker and wait until it answers a request."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamrec", "worker"], env=worker_env(self.settings),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_serving(self.settings, self.process, timeout_s)
        except Exception:
            self.kill()
            raise AssertionError(f"worker did not start; log:\n{self.log()[-3000:]}") from None
        return self

    def kill(self) -> None:
        """SIGKILL the worker (a crash: nothing is flushed or committed)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM the worker and wait for a clean exit (SIGKILL after 20 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        """The worker's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory starting worker subprocesses; all are stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "worker") -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"{name}-{len(started)}.log")
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        with contextlib.suppress(Exception):
            worker.stop()


def metric(settings: Settings, name: str) -> float:
    """One sample of a worker's Prometheus metrics (0 when absent or not serving yet)."""
    url = f"http://127.0.0.1:{settings.worker.web_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            lines = response.read().decode().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def wait_until_balanced(workers: list[Settings], timeout_s: float = 60.0) -> list[float]:
    """Wait until every worker owns events partitions and together they own all, twice in a row."""
    deadline = time.monotonic() + timeout_s
    stable = 0
    while time.monotonic() < deadline:
        owned = [metric(s, "streamrec_assigned_partitions") for s in workers]
        balanced = min(owned) > 0 and sum(owned) == workers[0].topics.partitions
        stable = stable + 1 if balanced else 0
        if stable >= 3:
            return owned
        time.sleep(0.5)
    raise AssertionError(f"workers never settled on a partition split: {owned}")


def collect(settings: Settings, topic: str, done: Callable[[list[Received]], bool],
            timeout_s: float = 60.0) -> list[Received]:
    """Read ``topic`` from the beginning until ``done(records)`` or the timeout."""
    consumer = open_consumer(settings, [topic], from_beginning=True)
    records: list[Received] = []
    try:
        for record in read(consumer, until_s=time.monotonic() + timeout_s,
                           stop=lambda: done(records)):
            records.append(record)
    finally:
        consumer.close()
    return records


def send(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Produce (key, value) pairs to ``topic`` and wait until the broker has them."""
    producer = make_producer(settings)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def topic_names(settings: Settings) -> TopicNames:
    """The full topic names for this test's prefix."""
    return TopicNames.for_prefix(settings.topics.prefix)


def values(records: list[Received], **match: Any) -> list[dict[str, Any]]:
    """Decoded values of ``records`` whose fields equal ``match``."""
    return [r.value for r in records if isinstance(r.value, dict)
            and all(r.value.get(k) == v for k, v in match.items())]
