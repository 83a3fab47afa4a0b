"""The self-attention sequence model: it learns sequential rules, its snapshots are checked, queries align with the catalogue."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.models.items import ItemCatalog, OwnedItem, ItemConfig
from streamrec.models.online_mf import OnlineMFConfig
from streamrec.models.sequence import SequenceModel
from streamrec.models.sequence_query import NumpyEncoder, SequenceQuery
from streamrec.models.sequence_snapshot import InvalidSnapshot, SequenceConfig, SequenceSnapshot
from streamrec.models.sequence_training import Sequences, SequenceTrainer, model_of, snapshot_of

N_ITEMS = 31  # prime: x -> 7x + 3 (mod 31) runs through cycles of 15 distinct items
SMALL = SequenceConfig(dim=32, max_len=20, batch_size=64, threads=2, dropout=0.1)


def rule_sequence(start: int, length: int) -> list[int]:
    """Each item follows from the previous one by a fixed rule; every item is equally popular."""
    items = [start]
    while len(items) < length:
        items.append((7 * items[-1] + 3) % N_ITEMS)
    return items


def rule_trained(config: SequenceConfig, steps: int = 150, cpu_share: float = 1.0) -> SequenceTrainer:
    rng = np.random.default_rng(0)
    sequences = Sequences(config.history)
    for user in range(300):
        for item in rule_sequence(int(rng.integers(0, N_ITEMS)), 12):
            sequences.add(f"u{user}", f"i{item}")
    trainer = SequenceTrainer(config, sequences)
    trainer.train(steps, cpu_share)
    return trainer


def hit_rate_at_1(query: SequenceQuery, seed: int = 1) -> float:
    """New users: given five items of the rule, is the sixth the single best-scored item?"""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(200):
        items = rule_sequence(int(rng.integers(0, N_ITEMS)), 6)
        scores = query.vectors @ query.query([f"i{item}" for item in items[:5]])
        hits += query.snapshot.item_ids[int(np.argmax(scores))] == f"i{items[5]}"
    return hits / 200


def test_the_model_learns_a_sequential_rule_that_popularity_cannot_see() -> None:
    trained = SequenceQuery(rule_trained(SMALL).snapshot("v1", 0))
    untrained = SequenceQuery(rule_trained(dataclasses.replace(SMALL, learning_rate=0.0)).snapshot("v0", 0))

    assert hit_rate_at_1(trained) >= 0.9
    assert hit_rate_at_1(untrained) < 0.2  # what guessing (or popularity: all equal) gets: ~1/31


def test_training_is_deterministic_for_a_seed() -> None:
    first = rule_trained(SMALL, steps=5).snapshot("a", 0)
    second = rule_trained(SMALL, steps=5).snapshot("b", 0)

    for name, array in first.state.items():
        np.testing.assert_allclose(array, second.state[name], rtol=1.3e-6, atol=1e-5)  # torch.testing defaults


def test_a_cpu_share_spreads_the_same_steps_out_with_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    paused: list[float] = []
    monkeypatch.setattr("streamrec.models.sequence_training.time.sleep", paused.append)
    back_to_back = rule_trained(SMALL, steps=4).snapshot("a", 0)
    assert paused == []  # a share of 1: steps back to back
    spread = rule_trained(SMALL, steps=4, cpu_share=0.25).snapshot("b", 0)
    assert len(paused) == 4 and all(pause > 0 for pause in paused)  # one pause per step, 3x its time
    for name, array in back_to_back.state.items():  # the same work: pausing changes no weight
        np.testing.assert_allclose(array, spread.state[name], rtol=1.3e-6, atol=1e-5)


def test_a_position_sees_only_earlier_items() -> None:
    model = SequenceModel(dataclasses.replace(SMALL, dropout=0.0), n_items=N_ITEMS).eval()
    before = model(torch.tensor([[0, 3, 5, 7, 9]]))
    after = model(torch.tensor([[0, 3, 5, 7, 11]]))  # only the last item differs

    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.allclose(before[:, -1], after[:, -1])
    assert torch.count_nonzero(before[0, 0]) == 0  # padding gives nothing


def test_sequences_are_bounded_in_length_and_users_and_keep_the_latest_order() -> None:
    sequences = Sequences(history=3, max_users=2)
    for item in ["a", "b", "c", "a", "d", "e"]:
        sequences.add("ann", item)
    sequences.add("bob", "a")
    sequences.add("cy", "b")  # ann is the least recently active: forgotten

    ids = sequences.item_ids
    assert [ids[i - 1] for i in sequences.of("bob")] == ["a"]
    assert sequences.of("ann") == [] and len(sequences) == 2
    sequences.add("bob", "b")
    for item in ["c", "b", "d", "e"]:
        sequences.add("bob", item)
    assert [ids[i - 1] for i in sequences.of("bob")] == ["c", "b", "d", "e"]  # history + 1, re-chosen moves last


def test_a_snapshot_round_trips_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    snapshot = rule_trained(SMALL, steps=3).snapshot("v7", 1234)
    path = snapshot.save(tmp_path)
    loaded = SequenceSnapshot.load(path)
    recent = ["i1", "i10", "i11"]

    assert path.name == "sequence-v7.npz" and loaded.version == "v7" and loaded.trained_events == 1234
    assert loaded.item_ids == snapshot.item_ids and loaded.config == snapshot.config
    np.testing.assert_allclose(SequenceQuery(loaded).query(recent), SequenceQuery(snapshot).query(recent))
    with torch.no_grad():  # back to torch (the trainer resumes from it): the same model
        for name, tensor in model_of(loaded).state_dict().items():
            np.testing.assert_array_equal(tensor.numpy(), snapshot.state[name])
    with pytest.raises(InvalidSnapshot, match="unreadable"):
        SequenceSnapshot.from_bytes(path.read_bytes()[:1000])
    poisoned = dict(snapshot.state)
    poisoned["norm.weight"] = poisoned["norm.weight"].copy()
    poisoned["norm.weight"][0] = float("nan")
    with pytest.raises(InvalidSnapshot, match="non-finite weights in norm.weight"):
        SequenceSnapshot.from_bytes(dataclasses.replace(snapshot, state=poisoned).to_bytes())
    with pytest.raises(InvalidSnapshot, match="do not fit"):
        SequenceSnapshot.from_bytes(dataclasses.replace(snapshot, config=dataclasses.replace(SMALL, dim=16)).to_bytes())


def test_scores_come_by_catalogue_row_and_unknown_items_add_nothing() -> None:
    query = SequenceQuery(rule_trained(SMALL, steps=3).snapshot("v1", 0))
    catalog = ItemCatalog(3600.0, 8, 100)
    config = ItemConfig(OnlineMFConfig(dim=8), 3600.0, 4)
    for item_id in ["brand-new", "i5", "i2"]:  # rows 0, 1, 2; the snapshot never saw "brand-new"
        catalog.upsert(item_id, OwnedItem().published(config))

    scores = query.scores(["i1", "i10"], catalog)
    by_item = query.vectors @ query.query(["i1", "i10"])

    assert scores.shape == (3,)
    assert scores[1] == pytest.approx(by_item[query.index["i5"]])
    assert scores[2] == pytest.approx(by_item[query.index["i2"]])
    assert scores[0] == pytest.approx(by_item.min())
    assert query.scores(["never-seen"], catalog) is None
    many = query.scores_many([["i1", "i10"], ["never-seen"], ["i3", "i4", "i5"]], catalog)  # one batch
    np.testing.assert_allclose(many[0], scores, rtol=1e-5)
    assert many[1] is None
    np.testing.assert_allclose(many[2], query.scores(["i3", "i4", "i5"], catalog), rtol=1e-5)


def test_an_item_new_to_the_snapshot_scores_like_the_known_item_its_online_vector_resembles() -> None:
    # Online vectors that are a linear function of the snapshot's (plus noise): the projection
    # fitted on the shared items takes a new item with i5's online vector to about i5's place.
    query = SequenceQuery(rule_trained(dataclasses.replace(SMALL, dim=8), steps=3).snapshot("v1", 0))
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(8, 8)).astype(np.float32)
    config = ItemConfig(OnlineMFConfig(dim=8), 3600.0, 4)
    catalog = ItemCatalog(3600.0, 8, 100)
    for item_id, row in query.index.items():
        vector = query.vectors[row] @ mixing + rng.normal(scale=1e-3, size=8).astype(np.float32)
        catalog.upsert(item_id, OwnedItem(vector=vector).published(config))
    catalog.upsert("new", OwnedItem(vector=catalog.vector("i5")).published(config))  # never in a snapshot

    scores = query.scores(["i1", "i10"], catalog)
    by_row = dict(zip(catalog.item_ids(range(len(catalog))), scores.tolist(), strict=True))

    assert by_row["new"] == pytest.approx(by_row["i5"], rel=1e-2, abs=1e-2)
    assert by_row["new"] > min(by_row.values())  # scored, not left at the bottom


def test_train_command_writes_a_checkpoint_that_loads(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "synthetic:users=40,items=30,events=800,seed=2", "--out",
                                      str(tmp_path), "--steps", "4", "--version", "t1"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["version"] == "t1" and summary["steps"] == 4 and summary["events"] == 800
    snapshot = SequenceSnapshot.load(Path(summary["checkpoint"]))
    assert len(snapshot.item_ids) == summary["items"] and snapshot.trained_events == 800


@pytest.mark.parametrize("heads", [1, 2])
def test_numpy_queries_equal_the_torch_model_and_padding_changes_nothing(heads: int) -> None:
    config = dataclasses.replace(SMALL, heads=heads, max_len=8)
    model = SequenceModel(config, n_items=N_ITEMS)
    torch.nn.init.normal_(model.positions.weight)  # not just the initial values: a trained-looking model
    for parameter in model.blocks.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    model.eval()
    encoder = NumpyEncoder(snapshot_of(model, [f"i{n}" for n in range(1, N_ITEMS + 1)], "t", 0).state, config)
    sequences = ([4], [3, 9, 27], [1, 2, 3, 4, 5, 6, 7, 8])
    together = encoder.queries(list(sequences))  # padded to the longest: the same vectors
    for row, items in enumerate(sequences):
        padded = torch.tensor([[0] * (config.max_len - len(items)) + items])
        trimmed = torch.tensor([items])
        with torch.no_grad():
            expected = model.query(padded)[0].numpy()
            np.testing.assert_allclose(model.query(trimmed)[0].numpy(), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(encoder.query(items), expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(together[row], expected, rtol=1e-4, atol=1e-4)


def test_a_query_prepared_for_the_catalogue_scores_as_one_that_was_not_even_after_it_grows() -> None:
    snapshot = rule_trained(dataclasses.replace(SMALL, dim=8), steps=3).snapshot("v1", 0)
    rng = np.random.default_rng(1)
    config = ItemConfig(OnlineMFConfig(dim=8), 3600.0, 4)
    catalog = ItemCatalog(3600.0, 8, 100)
    for item_id in snapshot.item_ids:
        catalog.upsert(item_id, OwnedItem(vector=rng.normal(size=8).astype(np.float32)).published(config))
    catalog.upsert("new", OwnedItem(vector=rng.normal(size=8).astype(np.float32)).published(config))
    prepared, fresh = SequenceQuery(snapshot), SequenceQuery(snapshot)

    prepared.prepare(catalog)  # as the worker's loading thread does before the swap
    assert prepared._projection is not None  # the unknown item's projection is fitted already
    catalog.upsert("newer", OwnedItem(vector=rng.normal(size=8).astype(np.float32)).published(config))

    np.testing.assert_array_equal(prepared.scores(["i1", "i10"], catalog), fresh.scores(["i1", "i10"], catalog))


def test_training_reads_the_latest_window_or_one_ending_at_an_earlier_item_of_a_longer_history() -> None:
    config = dataclasses.replace(SMALL, max_len=4, history=30)
    trainer = SequenceTrainer(config, Sequences(config.history))
    kept = list(range(1, 31))

    windows = [trainer._window(kept) for _ in range(400)]

    assert all(window == kept[:len(window)] and len(window) >= config.max_len + 1 for window in windows)
    latest = sum(window == kept for window in windows)
    assert 50 < latest < 150  # about a quarter read the newest items (1 - OLDER_WINDOWS)
    assert min(len(window) for window in windows) < 10  # the others reach far back
    assert trainer._window([1, 2, 3]) == [1, 2, 3]  # nothing older to choose from


def test_the_trainer_keeps_at_least_what_the_model_reads() -> None:
    from streamrec.config import SequenceSettings

    with pytest.raises(ValueError, match="history"):
        SequenceConfig(max_len=50, history=20)
    with pytest.raises(ValueError, match="sequence.history"):
        SequenceSettings(max_len=300)
