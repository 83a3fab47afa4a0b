"""Sequence-model snapshots are numpy alone: shapes fixed by the config, no pickle, no torch in a worker."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.models.sequence import SequenceModel
from streamrec.models.sequence_query import SequenceQuery
from streamrec.models.sequence_snapshot import InvalidSnapshot, SequenceConfig, SequenceSnapshot, weight_shapes
from tests.unit.test_sequence import SMALL, rule_trained

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("config, n_items", [(SequenceConfig(), 10), (SequenceConfig(dim=48, blocks=3, heads=4), 1)])
def test_weight_shapes_are_the_torch_models(config: SequenceConfig, n_items: int) -> None:
    state = SequenceModel(config, n_items).state_dict()

    assert weight_shapes(config, n_items) == {name: tuple(tensor.shape) for name, tensor in state.items()}


def test_missing_extra_and_wrongly_typed_weights_are_refused() -> None:
    snapshot = rule_trained(SMALL, steps=1).snapshot("v1", 0)
    missing = {name: array for name, array in snapshot.state.items() if name != "norm.bias"}
    extra = snapshot.state | {"blocks.layers.9.linear1.bias": np.zeros(SMALL.dim, dtype=np.float32)}
    doubles = snapshot.state | {"norm.bias": snapshot.state["norm.bias"].astype(np.float64)}

    with pytest.raises(InvalidSnapshot, match=r"do not fit.*missing \['norm.bias'\]"):
        SequenceSnapshot.from_bytes(dataclasses.replace(snapshot, state=missing).to_bytes())
    with pytest.raises(InvalidSnapshot, match=r"do not fit.*unexpected \['blocks.layers.9.linear1.bias'\]"):
        SequenceSnapshot.from_bytes(dataclasses.replace(snapshot, state=extra).to_bytes())
    with pytest.raises(InvalidSnapshot, match="norm.bias is float64"):
        SequenceSnapshot.from_bytes(dataclasses.replace(snapshot, state=doubles).to_bytes())
    with pytest.raises(InvalidSnapshot, match="items.weight is float32"):  # one item id too many
        dataclasses.replace(snapshot, item_ids=[*snapshot.item_ids, "extra"]).check()


def test_pickles_and_old_torch_checkpoints_are_refused() -> None:
    snapshot = rule_trained(SMALL, steps=1).snapshot("v1", 0)
    buffer = io.BytesIO()
    np.savez(buffer, __metadata__=np.zeros(1, dtype=np.uint8), payload=np.array([{"run": "me"}], dtype=object))
    old = io.BytesIO()
    torch.save({"format": 1, "state": {name: torch.from_numpy(array) for name, array in snapshot.state.items()}}, old)

    with pytest.raises(InvalidSnapshot, match="unreadable.*pickle"):
        SequenceSnapshot.from_bytes(buffer.getvalue())
    with pytest.raises(InvalidSnapshot, match="no metadata.*streamrec train"):
        SequenceSnapshot.from_bytes(old.getvalue())


WORKER = """
import json, sys
from pathlib import Path
from streamrec.streams.pipeline import load_sequence_query

query = load_sequence_query(Path(sys.argv[1]).read_bytes())
vector = query.query(["i1", "i10", "i11"])
print(json.dumps({"torch": sorted(name for name in sys.modules if name.split(".")[0] == "torch"),
                  "version": query.version, "query": vector.tolist()}))
"""


def test_a_worker_loads_and_queries_a_snapshot_without_importing_torch(tmp_path: Path) -> None:
    snapshot = rule_trained(SMALL, steps=3).snapshot("v1", 0)  # written by the torch side
    path = snapshot.save(tmp_path)

    run = subprocess.run([sys.executable, "-c", WORKER, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)

    assert run.returncode == 0, run.stderr
    worker = json.loads(run.stdout.strip().splitlines()[-1])
    assert worker["torch"] == [] and worker["version"] == "v1"
    np.testing.assert_allclose(worker["query"], SequenceQuery(snapshot).query(["i1", "i10", "i11"]), rtol=1e-5)
