"""Tansu quirk (2), ListOffsets "latest" under-reporting, and its workaround.

Tansu 0.6.0 answers ListOffsets "latest" with the last batch's base offset
+ 1 once a batch holds several records, while the fetch high watermark is
right. Faust takes table-recovery highwaters from ListOffsets, so
``streamrec.streams.transport`` corrects them. These tests run a real
embedded broker and, for recovery, a real Faust worker in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartition as KafkaTP

from streamrec.broker import EmbeddedBroker
from streamrec.streams.transport import true_end_offsets

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
QUIRK_TOPIC = "quirk-end-offsets"
FIRST_BATCH, SECOND_BATCH = 10, 7  # records per producer batch on partition 0
TRUE_END = FIRST_BATCH + SECOND_BATCH
APP_ID = "quirkapp"
EVENTS_TOPIC = "quirk-events"
CHANGELOG_TOPIC = f"{APP_ID}-counts-changelog"


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=0) as running:
        yield running


def create_topics(url: str, names: list[str], partitions: int = 1) -> None:
    """Create topics up front (quirk 1: auto-created topics can lose records)."""
    admin = KafkaAdminClient(bootstrap_servers=url)
    try:
        admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        admin.close()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def quirk_topic(broker: EmbeddedBroker) -> str:
    """Partition 0: one 10-record batch then one 7-record batch; partition 1: empty."""
    create_topics(broker.url, [QUIRK_TOPIC], partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.url, linger_ms=200)
    for count in (FIRST_BATCH, SECOND_BATCH):
        for i in range(count):
            producer.send(QUIRK_TOPIC, value=b"v%d" % i, partition=0)
        producer.flush()  # one request, so one batch per loop
    producer.close()
    return QUIRK_TOPIC


def test_list_offsets_latest_undercounts_multi_record_batches(
    broker: EmbeddedBroker, quirk_topic: str
) -> None:
    tp = KafkaTP(quirk_topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=broker.url, fetch_max_wait_ms=10)
    try:
        reported = consumer.end_offsets([tp])[tp]
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records: list[object] = []
        deadline = time.monotonic() + 10
        while len(records) < TRUE_END and time.monotonic() < deadline:
            records += consumer.poll(timeout_ms=200).get(tp, [])
        fetch_highwater = consumer.highwater(tp)
    finally:
        consumer.close()

    assert len(records) == TRUE_END
    assert fetch_highwater == TRUE_END, "the fetch high watermark should be right"
    if reported == TRUE_END:
        pytest.fail(
            "The broker now reports the true end offset from ListOffsets: Tansu "
            "quirk (2) is fixed. ConsumerTuning.correct_end_offsets can go."
        )
    # The bug exactly: the last batch's base offset + 1.
    assert reported == FIRST_BATCH + 1


def test_true_end_offsets_corrects_list_offsets(
    broker: EmbeddedBroker, quirk_topic: str
) -> None:
    async def run() -> dict[TopicPartition, int]:
        client = AIOKafkaClient(bootstrap_servers=broker.url)
        await client.bootstrap()
        try:
            await client._wait_on_metadata(quirk_topic)
            reported = {TopicPartition(quirk_topic, 0): FIRST_BATCH + 1,
                        TopicPartition(quirk_topic, 1): 0}
            corrected = await true_end_offsets(client, reported)  # type: ignore[arg-type]
            # Already-correct input (real Kafka) must come back unchanged.
            again = await true_end_offsets(client, corrected)
            assert again == corrected
            return dict(corrected)  # type: ignore[arg-type]
        finally:
            await client.close()

    assert asyncio.run(run()) == {
        TopicPartition(quirk_topic, 0): TRUE_END,
        TopicPartition(quirk_topic, 1): 0,
    }


APP_MODULE = f'''
import json, os
import faust
from streamrec.streams.transport import ConsumerTuning, Transport

class QuirkApp(faust.App):
    consumer_tuning = ConsumerTuning(
        correct_end_offsets=os.environ["QUIRK_CORRECT"] == "1")

    def _new_transport(self):
        return Transport(self.conf.broker_consumer, self)

app = QuirkApp(
    "{APP_ID}", broker="kafka://" + os.environ["QUIRK_BROKER"],
    store="rocksdb://", datadir=os.environ["QUIRK_DATA"],
    web_enabled=False, topic_partitions=1,
    broker_session_timeout=6, broker_rebalance_timeout=3,
    broker_heartbeat_interval=1, broker_commit_interval=0.2,
    producer_linger=0.05,  # the changelog producer batches several records
)
events = app.topic("{EVENTS_TOPIC}", key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, partitions=1)

@app.agent(events)
async def count(stream):
    async for key, _ in stream.items():
        counts[key.decode()] += 1

@app.timer(0.2)
async def dump():
    out = os.environ["QUIRK_OUT"]
    state = {{"recovered": app.tables.recovery.completed.is_set()
                           and not app.rebalancing,
             "counts": dict(counts.items())}}
    with open(out + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(out + ".tmp", out)
'''


class Worker:
    """A ``faust worker`` subprocess of the app above."""

    def __init__(self, tmp_path: Path, broker_url: str, name: str, correct: bool):
        self.out = tmp_path / f"{name}.json"
        self.log = tmp_path / f"{name}.log"
        env = {**os.environ, "QUIRK_BROKER": broker_url, "QUIRK_OUT": str(self.out),
               "QUIRK_DATA": str(tmp_path / f"{name}-data"),
               "QUIRK_CORRECT": "1" if correct else "0",
               "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "quirkapp", "worker", "-l", "info"],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def state(self) -> dict[str, object]:
        assert self.process.poll() is None, f"worker died:\n{self.tail()}"
        try:
            return dict(json.loads(self.out.read_text()))
        except (OSError, ValueError):
            return {}

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def committed_offset(url: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=url)
    try:
        offsets = admin.list_group_offsets({APP_ID: [KafkaTP(EVENTS_TOPIC, 0)]})
    finally:
        admin.close()
    meta = offsets.get(APP_ID, {}).get(KafkaTP(EVENTS_TOPIC, 0))
    return meta.offset if meta is not None else -1


def test_table_recovers_exact_counts_after_sigkill(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    correct = os.environ.get("STREAMREC_TEST_CORRECT_END_OFFSETS", "1") == "1"
    create_topics(broker.url, [EVENTS_TOPIC, CHANGELOG_TOPIC,
                               f"{APP_ID}-__assignor-__leader"])
    (tmp_path / "quirkapp.py").write_text(textwrap.dedent(APP_MODULE))
    first = Worker(tmp_path, broker.url, "first", correct)
    second: Worker | None = None
    try:
        wait_until(lambda: first.state().get("recovered") is True, 30, "worker ready")
        producer = KafkaProducer(bootstrap_servers=broker.url, linger_ms=20)
        keys = [f"k{i % 7}" for i in range(600)]
        for key in keys:
            producer.send(EVENTS_TOPIC, key=key.encode(), value=b"1")
        producer.close()
        expected = dict(Counter(keys))
        wait_until(lambda: first.state().get("counts") == expected, 30,
                   "the first worker to count every event")
        wait_until(lambda: committed_offset(broker.url) == len(keys), 15,
                   "the source offsets to be committed")

        # Sanity: the changelog really has multi-record batches, i.e. ListOffsets
        # under-reports its end, which is what the recovery must survive.
        consumer = KafkaConsumer(bootstrap_servers=broker.url)
        changelog = KafkaTP(CHANGELOG_TOPIC, 0)
        reported_end = consumer.end_offsets([changelog])[changelog]
        consumer.close()
        assert reported_end < len(keys), "changelog batches hold one record each"

        first.kill()
        second = Worker(tmp_path, broker.url, "second", correct)  # fresh data dir
        wait_until(lambda: second.state().get("recovered") is True, 45,
                   "the restarted worker to recover")
        time.sleep(1.0)
        recovered = second.state().get("counts")
        assert recovered == expected, (
            f"recovered {recovered}, expected {expected} "
            f"(changelog ListOffsets end {reported_end})\n{second.tail()}")
    finally:
        first.kill()
        if second is not None:
            second.kill()
