"""Typed settings: defaults, then ``config/streamrec.toml``, then ``STREAMREC_*`` variables.

One :class:`Settings` object is built at the edge (the CLI or the Faust app
factory) with :func:`load_settings` and passed down. Nothing else reads the
environment. Nested keys are overridden with a double underscore, e.g.
``STREAMREC_KAFKA__BROKER=kafka-1:9092`` or ``STREAMREC_TOPICS__PARTITIONS=12``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from streamrec.errors import ConfigError

if TYPE_CHECKING:  # imported where used: loading settings must not compile the model's kernels
    from streamrec.index.live_index import IndexConfig
    from streamrec.models.online_recommender import RecommenderConfig
    from streamrec.models.sequence_snapshot import SequenceConfig
    from streamrec.models.sequence_recommender import TrainerSchedule

#: Where ``load_settings`` looks when no file is named (relative to the working directory).
DEFAULT_CONFIG_PATH = Path("config/streamrec.toml")
#: Environment variable naming the settings file; ``--config`` on the CLI wins over it.
CONFIG_PATH_ENV = "STREAMREC_CONFIG"
#: STREAMREC_* variables that are not settings (the test suite's broker address).
NON_SETTING_ENV = frozenset({CONFIG_PATH_ENV, "STREAMREC_TEST_BROKER"})


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """How every Kafka client (Faust worker, producer, consumer, admin) connects."""

    broker: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    fetch_max_wait_ms: int = Field(10, ge=0, le=60_000)
    producer_linger_ms: int = Field(5, ge=0, le=10_000)
    producer_max_batch_bytes: int = Field(262_144, ge=1024, le=1_000_000)
    session_timeout_s: float = Field(6.0, gt=0)
    rebalance_timeout_s: float = Field(3.0, gt=0)
    heartbeat_interval_s: float = Field(1.0, gt=0)
    correct_end_offsets: bool = True

    @property
    def bootstrap_servers(self) -> list[str]:
        """The broker list as ``host:port`` strings (``kafka://`` prefixes removed)."""
        return [s.strip().removeprefix("kafka://") for s in self.broker.split(",") if s.strip()]


class TopicSettings(_Section):
    """Topic names and layout. User-keyed topics share ``partitions``."""

    prefix: str = "streamrec."
    partitions: int = Field(4, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=16)

    @field_validator("prefix")
    @classmethod
    def _prefix_is_kafka_safe(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError(f"topic prefix {value!r} may only use letters, digits, '.', '_' and '-'")
        return value


class WorkerSettings(_Section):
    """The Faust worker process: identity, local state and web port."""

    app_id: str = "streamrec"
    data_dir: Path = Path(".streamrec-data")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    rocksdb_write_buffer_mb: int = Field(4, ge=1, le=4096)
    rocksdb_block_cache_mb: int = Field(8, ge=1, le=65536)
    rocksdb_wal: bool = False
    """Also write RocksDB's write-ahead log (the tables' changelog topics already make them durable)."""
    heap_trim_interval_s: float = Field(60.0, ge=0, le=86_400)
    """How often the worker gives the C heap's free pages back to the OS (0: never)."""
    malloc_arenas: int = Field(2, ge=0, le=64)
    """Most glibc heaps the worker's threads share (0: glibc's default, 8 per core)."""
    malloc_mmap_threshold_kb: int = Field(128, ge=0, le=32_768)
    """Allocations this size and larger get their own mapping (0: glibc's dynamic threshold)."""
    gc_young_threshold: int = Field(10_000, ge=0, le=10_000_000)
    """Net allocations between collections of the garbage collector's young generation (0: Python's 700)."""
    gc_freeze: bool = True
    """Once ready, exempt the objects alive then from Python's garbage collector (``gc.freeze``):
    full collections then pause the worker for a few ms instead of about 100 ms."""
    max_batch_events: int = Field(500, ge=1, le=100_000)
    """Most events processed as one micro-batch."""
    max_batch_wait_ms: float = Field(0.0, ge=0, le=1000)
    """How long a batch may wait for events the broker already holds (0: only those already delivered)."""
    send_lists_at_once: bool = True
    """Send a micro-batch's lists (and what is queued before them) without the producer's linger,
    unless more events of the partition are waiting."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The worker's event loop: uvloop (libuv, less CPU per message) or the standard library's."""
    owned_items_cached: int = Field(50_000, ge=0, le=10_000_000)
    """Most owned items kept decoded in memory (0: read and decode every update from RocksDB)."""
    relay_record_bytes: int = Field(0, ge=0, le=1_000_000)
    """``--relay`` only: pad each forwarded copy with trailing spaces (still valid JSON) to at
    least this many bytes, so the relay's output topic grows like streamrec's lists do."""

    def rocksdb_options(self) -> dict[str, int]:
        """Faust's RocksDB store options: bounded memtables per table partition, one block cache per worker."""
        return {"write_buffer_size": self.rocksdb_write_buffer_mb * 2**20, "max_write_buffer_number": 2,
                "block_cache_size": self.rocksdb_block_cache_mb * 2**20, "write_ahead_log": self.rocksdb_wal}


class EventSettings(_Section):
    """What a valid event is, and how much each type counts."""

    types: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 2.0, "add_to_cart": 4.0,
                                 "purchase": 8.0, "rating": 1.0}
    )
    value_weighted_types: list[str] = Field(default_factory=lambda: ["rating"])
    max_id_length: int = Field(256, ge=1)
    max_payload_bytes: int = Field(16_384, ge=64)
    dedup_window: int = Field(256, ge=0, le=100_000)
    max_future_skew_s: float = Field(3600.0, ge=0)

    @field_validator("types")
    @classmethod
    def _weights_are_positive(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("at least one event type is needed, e.g. {view = 1.0}")
        for name, weight in value.items():
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"weight of event type {name!r} must be a positive number, got {weight}")
        return value


class ModelSettings(_Section):
    """The recommender: list length, online learning, signal fusion, per-user memory."""

    k: int = Field(10, ge=1, le=1000)
    max_k: int = Field(100, ge=1, le=10_000)
    popularity_half_life_s: float = Field(3600.0, gt=0)
    history_size: int = Field(200, ge=1, le=100_000)
    max_items: int = Field(1_000_000, ge=1)
    item_publish_interval_ms: int = Field(200, ge=1, le=60_000)
    dim: int = Field(32, ge=2, le=1024)
    learning_rate: float = Field(0.03, ge=0, le=10)
    user_lr_multiplier: float = Field(32.0, ge=0, le=1000)
    regularization: float = Field(0.01, ge=0, le=1)
    negatives: int = Field(4, ge=0, le=100)
    max_norm: float = Field(3.0, gt=0, le=1000)
    seed: int = Field(0, ge=0)
    covisit_history: int = Field(5, ge=1, le=100)
    max_neighbours: int = Field(50, ge=1, le=10_000)
    mf_weight: float = Field(1.0, ge=0, le=1000)
    covisit_weight: float = Field(1.0, ge=0, le=1000)
    trending_weight: float = Field(0.0, ge=0, le=1000)
    cold_start: float = Field(1.0, ge=0, le=1000)
    candidates: int = Field(100, ge=1, le=100_000)
    trending_candidates: int = Field(50, ge=0, le=100_000)
    index_min_items: int = Field(20_000, ge=0)
    diversity: float = Field(0.0, ge=0, le=1)
    diversity_pool: int = Field(3, ge=1, le=100)
    explore: float = Field(0.0, ge=0, le=0.5)

    def recommender(self, dedup_window: int = 0, half_life_s: float | None = None,
                    sequence_weight: float = 0.0) -> RecommenderConfig:
        """The pure model's configuration (``half_life_s`` overrides the popularity half-life;
        ``sequence_weight`` is the sequence model's, from ``[sequence]``)."""
        from streamrec.models.online_mf import OnlineMFConfig
        from streamrec.models.online_recommender import FusionWeights, RecommenderConfig

        return RecommenderConfig(
            mf=OnlineMFConfig(dim=self.dim, learning_rate=self.learning_rate,
                              user_lr_multiplier=self.user_lr_multiplier, regularization=self.regularization,
                              negatives=self.negatives, max_norm=self.max_norm, seed=self.seed),
            fusion=FusionWeights(self.mf_weight, self.covisit_weight, self.trending_weight, self.cold_start,
                                 sequence_weight),
            covisit_history=self.covisit_history, max_neighbours=self.max_neighbours,
            half_life_s=self.popularity_half_life_s if half_life_s is None else half_life_s,
            history_size=self.history_size, dedup_window=dedup_window, max_items=self.max_items,
            candidates=self.candidates, trending_candidates=self.trending_candidates,
            index_min_items=self.index_min_items, diversity=self.diversity, diversity_pool=self.diversity_pool,
            explore=self.explore)


class SequenceSettings(_Section):
    """The self-attention sequence model: its shape, how the trainer fine-tunes it, how much it counts."""

    max_len: int = Field(50, ge=1, le=1000)
    dim: int = Field(64, ge=2, le=1024)
    blocks: int = Field(2, ge=1, le=12)
    heads: int = Field(1, ge=1, le=16)
    dropout: float = Field(0.5, ge=0, lt=1)
    negatives: int = Field(1024, ge=1, le=1_000_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    learning_rate: float = Field(0.001, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    recent_share: float = Field(0.25, ge=0, le=1)
    history: int = Field(200, ge=1, le=10_000)
    seed: int = Field(0, ge=0)
    threads: int = Field(1, ge=1, le=256)
    train_every_events: int = Field(2000, ge=1)
    train_steps: int = Field(40, ge=1)
    train_every_s: float = Field(60.0, gt=0)
    max_users: int = Field(1_000_000, ge=1)
    holdout_share: float = Field(0.05, ge=0, lt=1)
    trainer_nice: int = Field(10, ge=0, le=19)
    trainer_idle: bool = True
    trainer_cpu_share: float = Field(0.3, gt=0, le=1)
    """Most of the wall time the trainer's optimizer steps take (1: back to back); it pauses between them."""
    max_quality_drop: float = Field(0.2, ge=0, le=1)
    weight: float = Field(2.5, ge=0, le=1000)

    def config(self) -> SequenceConfig:
        """The pure model's configuration."""
        from streamrec.models.sequence_snapshot import SequenceConfig

        return SequenceConfig(max_len=self.max_len, dim=self.dim, blocks=self.blocks, heads=self.heads,
                              dropout=self.dropout, negatives=self.negatives, batch_size=self.batch_size,
                              learning_rate=self.learning_rate, weight_decay=self.weight_decay,
                              recent_share=self.recent_share, history=self.history, seed=self.seed,
                              threads=self.threads)

    def schedule(self) -> TrainerSchedule:
        """When the trainer fine-tunes, and how much."""
        from streamrec.models.sequence_recommender import TrainerSchedule

        return TrainerSchedule(self.train_every_events, self.train_steps, self.max_users)

    @model_validator(mode="after")
    def _consistent(self) -> SequenceSettings:
        if self.dim % self.heads:
            raise ValueError(f"sequence.dim ({self.dim}) must be divisible by sequence.heads ({self.heads})")
        if self.history < self.max_len:
            raise ValueError(f"sequence.history ({self.history}) must be >= sequence.max_len ({self.max_len}): "
                             "the trainer keeps at least what the model reads")
        return self


class ABSettings(_Section):
    """An A/B test: a stable share of users (hash of ``salt`` and user id) gets arm "b", whose
    signal weights replace those of ``[model]``/``[sequence]`` where set."""

    share: float = Field(0.0, ge=0, le=1)
    salt: str = Field("streamrec-ab", min_length=1)
    mf_weight: float | None = Field(None, ge=0, le=1000)
    covisit_weight: float | None = Field(None, ge=0, le=1000)
    trending_weight: float | None = Field(None, ge=0, le=1000)
    sequence_weight: float | None = Field(None, ge=0, le=1000)

    def arm_b(self, config: RecommenderConfig) -> RecommenderConfig:
        """Arm b's configuration: ``config`` with the weights set here."""
        import dataclasses

        changes = {name: value for name, value in (
            ("mf", self.mf_weight), ("covisit", self.covisit_weight), ("trending", self.trending_weight),
            ("sequence", self.sequence_weight)) if value is not None}
        return dataclasses.replace(config, fusion=dataclasses.replace(config.fusion, **changes))


class IndexSettings(_Section):
    """The live FAISS index of item vectors (see ``streamrec.index.live_index.IndexConfig``)."""

    kind: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    flat_max_items: int = Field(20_000, ge=0)
    hnsw_m: int = Field(32, ge=4, le=256)
    hnsw_ef_construction: int = Field(40, ge=8, le=4096)
    hnsw_ef_search: int = Field(128, ge=8, le=4096)
    ivf_lists: int = Field(0, ge=0)
    ivf_probe: int = Field(16, ge=1)
    rebuild_delta_items: int = Field(2_000, ge=1)
    rebuild_delta_share: float = Field(0.02, ge=0, le=1)
    rebuild_tombstone_share: float = Field(0.1, gt=0, le=1)
    build_threads: int = Field(1, ge=1, le=256)
    snapshot_interval_s: float = Field(300.0, ge=0)

    def config(self, dim: int) -> IndexConfig:
        """The pure index's configuration for ``dim``-dimensional vectors."""
        from streamrec.index.live_index import IndexConfig

        return IndexConfig(dim=dim, **self.model_dump(exclude={"snapshot_interval_s"}))


class EmbeddedBrokerSettings(_Section):
    """The embedded Tansu broker started by ``streamrec broker`` and ``streamrec demo``."""

    host: str = "127.0.0.1"
    port: int = Field(9092, ge=0, le=65535)


class Settings(BaseSettings):
    """Every streamrec setting. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_", env_nested_delimiter="__", frozen=True, extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    events: EventSettings = EventSettings()
    model: ModelSettings = ModelSettings()
    sequence: SequenceSettings = SequenceSettings()
    ab: ABSettings = ABSettings()
    index: IndexSettings = IndexSettings()
    embedded: EmbeddedBrokerSettings = EmbeddedBrokerSettings()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.model.k > self.model.max_k:
            raise ValueError(f"model.k ({self.model.k}) must not exceed model.max_k ({self.model.max_k})")
        if self.kafka.heartbeat_interval_s >= self.kafka.session_timeout_s:
            raise ValueError(
                f"kafka.heartbeat_interval_s ({self.kafka.heartbeat_interval_s}) must be below "
                f"kafka.session_timeout_s ({self.kafka.session_timeout_s})")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments > STREAMREC_* variables > TOML file > defaults.
        return init_settings, env_settings, _TomlBelowEnv(settings_cls, env_settings)


class _TomlBelowEnv(TomlConfigSettingsSource):
    """The TOML file, minus table values that the environment sets.

    pydantic-settings deep-merges dicts across sources, so without this an
    environment value for a table (``STREAMREC_EVENTS__TYPES``) would be merged
    into the file's table instead of replacing it.
    """

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._env = env

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for section, values in self._env().items():
            file_section = data.get(section)
            if not isinstance(values, dict) or not isinstance(file_section, dict):
                continue
            for key, value in values.items():
                if isinstance(value, dict):
                    file_section.pop(key, None)
        return data


def resolve_config_path(path: Path | None) -> Path | None:
    """Pick the settings file: ``path``, else ``$STREAMREC_CONFIG``, else the default if present."""
    if path is not None:
        chosen = path
    elif os.environ.get(CONFIG_PATH_ENV):
        chosen = Path(os.environ[CONFIG_PATH_ENV])
    elif DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    else:
        return None
    if not chosen.is_file():
        raise ConfigError(
            f"Settings file {str(chosen)!r} does not exist. Pass an existing file with "
            f"--config or ${CONFIG_PATH_ENV}, or omit both to use the built-in defaults."
        )
    return chosen


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the TOML file, the environment and ``overrides``.

    Parameters
    ----------
    path
        A TOML settings file. ``None`` means ``$STREAMREC_CONFIG`` or
        ``config/streamrec.toml`` when it exists, else built-in defaults.
    overrides
        Section objects or dicts that win over everything else (used by the CLI).

    Raises
    ------
    ConfigError
        With every invalid key, its value and what is allowed.
    """
    check_environment_names(os.environ)
    toml_file = resolve_config_path(path)
    cls: type[Settings] = Settings
    if toml_file is not None:
        config = {**Settings.model_config, "toml_file": toml_file}
        cls = type("Settings", (Settings,), {"model_config": config, "__doc__": Settings.__doc__})
    try:
        return cls(**overrides)
    except (tomllib.TOMLDecodeError, SettingsError) as exc:
        raise ConfigError(
            f"Could not read streamrec settings ({exc}). Check the syntax of "
            f"{toml_file or 'the settings file'} and that STREAMREC_* values holding lists or "
            "tables are JSON, e.g. STREAMREC_EVENTS__TYPES='{\"view\": 1}'."
        ) from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            if err["loc"] else err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        source = f" in {toml_file}" if toml_file else ""
        raise ConfigError(
            f"Invalid streamrec settings{source} or STREAMREC_* variables: {problems}. "
            "See config/streamrec.toml for every key and its allowed values."
        ) from exc


def check_environment_names(environ: Mapping[str, str]) -> None:
    """Reject ``STREAMREC_*`` variables that name no setting (a typo would be silently ignored).

    Raises
    ------
    ConfigError
        Naming the variable and the sections or keys that exist.
    """
    for name in environ:
        if not name.startswith("STREAMREC_") or name in NON_SETTING_ENV:
            continue
        section, _, key = name.removeprefix("STREAMREC_").lower().partition("__")
        fields = Settings.model_fields
        if section not in fields:
            raise ConfigError(
                f"environment variable {name} names no setting: {section!r} is not a section "
                f"(sections: {', '.join(fields)}). Use STREAMREC_<SECTION>__<KEY>, "
                "e.g. STREAMREC_KAFKA__BROKER.")
        keys = fields[section].annotation.model_fields  # type: ignore[union-attr]
        if key.split("__")[0] not in keys:
            raise ConfigError(
                f"environment variable {name} names no setting: [{section}] has no key {key!r} "
                f"(keys: {', '.join(keys)}).")


def with_section(settings: Settings, section: str, **changes: Any) -> Settings:
    """Return a copy of ``settings`` with fields of one section replaced (and validated).

    Raises
    ------
    ConfigError
        When a changed value is invalid for its field.
    """
    current = getattr(settings, section)
    try:
        updated = type(current).model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        problems = "; ".join(f"{section}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']} "
                             f"(got {err.get('input')!r})" for err in exc.errors())
        raise ConfigError(f"Invalid setting: {problems}.") from exc
    return settings.model_copy(update={section: updated})
