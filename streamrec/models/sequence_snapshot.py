"""Sequence-model snapshots in numpy alone: what the trainer ships and every worker serves.

A worker never imports torch (it would raise its RSS from about 240 MB to 430 MB), so a
snapshot is plain float32 arrays, named as in the torch model's ``state_dict``, plus its
metadata. On the wire and on disk it is an ``np.savez`` archive (``.npz``): one ``.npy``
per weight and the metadata (format, version, config, item ids, ...) as one JSON string
stored as a uint8 array. It is read with ``allow_pickle=False``, so no bytes from the
models topic ever run as code.

The torch side (turning a model into a snapshot and back) lives in ``sequence_training.py``.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ItemId = str

SNAPSHOT_FORMAT = 2
"""2: ``.npz`` of float32 arrays and JSON metadata (1 was a ``torch.save`` checkpoint, ``.pt``)."""

_METADATA = "__metadata__"
"""The archive member holding the JSON metadata (no weight name starts with an underscore)."""


@dataclass(frozen=True, slots=True)
class SequenceConfig:
    """The sequence model's shape and how it is trained.

    Attributes
    ----------
    max_len
        Items of a user's history the model reads (the most recent ones).
    dim, blocks, heads, dropout
        Embedding width, Transformer blocks, attention heads (must divide ``dim``), dropout.
    negatives
        Sampled-softmax negatives per training step, shared by the batch (uniform over the
        catalogue, plus the batch's own targets); a catalogue no larger is scored whole.
    batch_size, learning_rate, weight_decay
        Adam on mini-batches of ``batch_size`` users' sequences.
    recent_share
        Share of each batch drawn from the users active since the last training round
        (the rest uniformly from all users), so a round learns what is happening now.
    history
        Distinct items the trainer keeps per user (at least ``max_len``). A training
        sequence is the latest ``max_len + 1`` of them, or more often a window ending at a
        random earlier item, so transitions older than what the model reads still teach.
    seed
        Seeds the weights, dropout and the batch sampling.
    threads
        torch CPU threads for training (keep it below the cores the workers need). Workers
        query in numpy, whose matrix products use OpenBLAS threads (``OPENBLAS_NUM_THREADS``).
    """

    max_len: int = 50
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    negatives: int = 1024
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    recent_share: float = 0.25
    history: int = 200
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("max_len", "dim", "blocks", "heads", "negatives", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"sequence model {name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"sequence model dim {self.dim} is not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"sequence model dropout must be in [0, 1), got {self.dropout}")
        if self.history < self.max_len:
            raise ValueError(f"sequence model history ({self.history}) must be >= max_len ({self.max_len})")
        if not 0.0 <= self.recent_share <= 1.0:
            raise ValueError(f"sequence model recent_share must be in [0, 1], got {self.recent_share}")
        if not self.learning_rate >= 0.0:
            raise ValueError(f"sequence model learning_rate must be >= 0, got {self.learning_rate}")


class InvalidSnapshot(ValueError):
    """A snapshot that must not be served (unreadable, wrong shape, non-finite weights)."""


def weight_shapes(config: SequenceConfig, n_items: int) -> dict[str, tuple[int, ...]]:
    """Every weight's name and shape in a model of ``config`` knowing ``n_items`` items.

    The names and shapes of ``SequenceModel(config, n_items).state_dict()``, without torch
    (a unit test holds the two equal). Row 0 of ``items.weight`` is padding.
    """
    d = config.dim
    shapes: dict[str, tuple[int, ...]] = {"items.weight": (n_items + 1, d), "positions.weight": (config.max_len, d)}
    block = {"self_attn.in_proj_weight": (3 * d, d), "self_attn.in_proj_bias": (3 * d,),
             "self_attn.out_proj.weight": (d, d), "self_attn.out_proj.bias": (d,),
             "linear1.weight": (d, d), "linear1.bias": (d,),  # feed-forward width = dim
             "linear2.weight": (d, d), "linear2.bias": (d,),
             "norm1.weight": (d,), "norm1.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,)}
    for n in range(config.blocks):
        shapes.update({f"blocks.layers.{n}.{name}": shape for name, shape in block.items()})
    shapes.update({"norm.weight": (d,), "norm.bias": (d,)})
    return shapes


@dataclass(frozen=True)
class SequenceSnapshot:
    """A versioned, immutable model for queries: weights, config and the item ids of its indices.

    ``state`` maps each weight name (see :func:`weight_shapes`) to a float32 array;
    ``item_ids[i]`` is the item of model index ``i + 1``.
    """

    version: str
    config: SequenceConfig
    item_ids: list[ItemId]
    state: dict[str, np.ndarray]
    trained_events: int
    created_ms: int

    def to_bytes(self) -> bytes:
        """The snapshot serialised: an ``.npz`` archive of the weights and the JSON metadata."""
        metadata = json.dumps({"format": SNAPSHOT_FORMAT, "version": self.version,
                               "config": dataclasses.asdict(self.config), "item_ids": self.item_ids,
                               "trained_events": self.trained_events, "created_ms": self.created_ms})
        buffer = io.BytesIO()
        np.savez(buffer, **{_METADATA: np.frombuffer(metadata.encode(), dtype=np.uint8)}, **self.state)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SequenceSnapshot:
        """Read and check a snapshot.

        Raises
        ------
        InvalidSnapshot
            Unreadable, another format, inconsistent shapes or non-finite weights.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:  # never unpickle
                if _METADATA not in archive.files:
                    raise InvalidSnapshot(f"not a sequence-model snapshot of format {SNAPSHOT_FORMAT} (no metadata); "
                                          "an older torch checkpoint (.pt) must be retrained with `streamrec train`")
                arrays = {name: archive[name] for name in archive.files}
            metadata = json.loads(arrays.pop(_METADATA).tobytes())
            if metadata.get("format") != SNAPSHOT_FORMAT:
                raise InvalidSnapshot(f"snapshot format {metadata.get('format')!r}, expected {SNAPSHOT_FORMAT}")
            snapshot = cls(str(metadata["version"]), SequenceConfig(**metadata["config"]),
                           [str(i) for i in metadata["item_ids"]], arrays, int(metadata["trained_events"]),
                           int(metadata["created_ms"]))
        except InvalidSnapshot:
            raise
        except Exception as exc:  # noqa: BLE001 - any damage is the same answer: do not serve it
            raise InvalidSnapshot(f"unreadable sequence-model snapshot: {exc}") from exc
        snapshot.check()
        return snapshot

    def check(self) -> None:
        """Raise :class:`InvalidSnapshot` unless the weights fit the config and are all finite float32."""
        expected = weight_shapes(self.config, len(self.item_ids))
        missing, extra = expected.keys() - self.state.keys(), self.state.keys() - expected.keys()
        if missing or extra:
            raise InvalidSnapshot(f"snapshot {self.version}: weights do not fit its config: "
                                  f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, shape in expected.items():
            array = self.state[name]
            if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.shape != shape:
                raise InvalidSnapshot(f"snapshot {self.version}: weights do not fit its config: {name} is "
                                      f"{getattr(array, 'dtype', type(array))} {getattr(array, 'shape', '')}, "
                                      f"expected float32 {shape}")
            if not np.isfinite(array).all():
                raise InvalidSnapshot(f"snapshot {self.version}: non-finite weights in {name}")

    def save(self, directory: Path) -> Path:
        """Write ``<directory>/sequence-<version>.npz`` atomically (a reader never sees half a file)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"sequence-{self.version}.npz"
        partial = path.with_suffix(".partial")
        partial.write_bytes(self.to_bytes())
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> SequenceSnapshot:
        """Read and check a snapshot file (see :meth:`from_bytes`)."""
        return cls.from_bytes(path.read_bytes())
