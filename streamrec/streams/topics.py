"""Topic names, layout and creation, and the connection options every Kafka client shares.

Topics are created up front (``streamrec topics create``; workers do it at start):
the embedded broker can lose records written to an auto-created topic, and on
a real cluster it makes partition counts and compaction explicit.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from streamrec.config import KafkaSettings, Settings

#: Faust tables of the worker with a changelog topic ``<app_id>-<table>-changelog`` (the
#: ``items`` table's changelog is the item-state topic, see ``pipeline.py``).
TABLES = ("users",)


RAW_BYTES: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
"""Faust topic options for streamrec's topics: keys and values stay bytes (streamrec decodes them itself)."""

@dataclass(frozen=True, slots=True)
class TopicNames:
    """The full names of streamrec's topics for one prefix."""

    events: str
    items: str
    requests: str
    recommendations: str
    dead_letter: str
    item_updates: str
    """Internal: item-side updates, batched per partition of their item_ids (:func:`key_partition`)."""
    item_state: str
    """Internal, compacted: each item's latest state, replicated to every worker."""
    models: str
    """Internal, compacted, one partition: sequence-model snapshots in chunks (``model_topic.py``)."""

    @classmethod
    def for_prefix(cls, prefix: str) -> TopicNames:
        """Names for ``prefix`` (``"streamrec."`` gives ``"streamrec.events"``, ...)."""
        return cls(*(prefix + name for name in (
            "events", "items", "requests", "recommendations", "dead-letter",
            "internal.item-updates", "internal.item-state", "internal.models",
        )))


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client and aiokafka) gives ``key``.

    Compiled: aiokafka's murmur2 is pure Python, about 4 µs per key, and the worker
    partitions every list it sends by its user.
    """
    return (_murmur2(np.frombuffer(key, dtype=np.uint8)) & 0x7FFFFFFF) % partitions


@njit(cache=True)
def _murmur2(data: np.ndarray) -> int:  # pragma: no cover - compiled; tested against aiokafka's
    """Kafka's murmur2 of ``data`` (bytes as uint8), as ``aiokafka.partitioner.murmur2`` computes it."""
    mask, m = 0xFFFFFFFF, 0x5BD1E995
    length = data.shape[0]
    h = (0x9747B28C ^ length) & mask
    for i in range(length // 4):
        k = np.int64(data[4 * i]) | (np.int64(data[4 * i + 1]) << 8) | (np.int64(data[4 * i + 2]) << 16) \
            | (np.int64(data[4 * i + 3]) << 24)
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= np.int64(data[tail + 2]) << 16
    if extra >= 2:
        h ^= np.int64(data[tail + 1]) << 8
    if extra >= 1:
        h ^= np.int64(data[tail])
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic to create."""

    name: str
    partitions: int
    compacted: bool = False


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic a worker needs, including the Faust table changelogs."""
    names = TopicNames.for_prefix(settings.topics.prefix)
    n = settings.topics.partitions
    app_id = settings.worker.app_id
    changelogs = [f"{app_id}-{table}-changelog" for table in TABLES]
    return [
        TopicSpec(names.events, n),
        TopicSpec(names.items, n, compacted=True),
        TopicSpec(names.requests, n),
        TopicSpec(names.recommendations, n),
        TopicSpec(names.dead_letter, n),
        TopicSpec(names.item_updates, n),
        TopicSpec(names.item_state, n, compacted=True),
        TopicSpec(names.models, 1, compacted=True),  # one partition: a snapshot's chunks stay in order
        *(TopicSpec(name, n, compacted=True) for name in changelogs),
        TopicSpec(f"{app_id}-__assignor-__leader", 1),  # Faust's leader election
    ]


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """An SSL context for the SSL/SASL_SSL protocols, else ``None``."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(str(kafka.ssl_certfile),
                                str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
    return context


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection options accepted by both kafka-python and aiokafka clients."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    return options


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the missing streamrec topics; return the names created.

    Existing topics are left alone (their partition count is not changed).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**client_options(settings.kafka),
                             request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        wanted = [spec for spec in topic_specs(settings) if spec.name not in existing]
        new_topics = [
            NewTopic(spec.name, spec.partitions, settings.topics.replication_factor,
                     topic_configs={"cleanup.policy": "compact"} if spec.compacted else {})
            for spec in wanted
        ]
        if new_topics:
            try:
                admin.create_topics(new_topics, timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass  # another worker created them between our list and create
        return [spec.name for spec in wanted]
    finally:
        admin.close()
