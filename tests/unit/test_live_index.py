"""The live FAISS index against exact search: updates, removals, rebuilds, snapshots."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.index.benchmark import synthetic_catalogue
from streamrec.index.live_index import IndexConfig, LiveIndex


def exact(vectors: dict[str, np.ndarray], query: np.ndarray, k: int, exclude: set[str] = frozenset()) -> list[str]:
    """Brute-force top ``k`` ids by inner product (ties by id, as an index may order them either way)."""
    scored = sorted(((-float(vector @ query), item_id) for item_id, vector in vectors.items() if item_id not in exclude))
    return [item_id for _, item_id in scored[:k]]


def recall(index: LiveIndex, vectors: dict[str, np.ndarray], queries: np.ndarray, k: int) -> float:
    found = [len(set(exact(vectors, q, k)) & {i for i, _ in index.search(q, k)}) for q in queries]
    return sum(found) / (k * len(queries))


def filled(config: IndexConfig, n: int, seed: int = 0) -> tuple[LiveIndex, dict[str, np.ndarray]]:
    vectors, _ = synthetic_catalogue(n, config.dim, seed)
    index = LiveIndex(config)
    truth = {f"i{row}": vectors[row] for row in range(n)}
    for item_id, vector in truth.items():
        index.upsert(item_id, vector)
    return index, truth


def test_exact_index_equals_brute_force_through_upserts_removals_and_rebuilds() -> None:
    config = IndexConfig(dim=8, kind="flat", rebuild_delta_items=50, rebuild_delta_share=0.0)
    index, truth = filled(config, 300)
    rng = np.random.default_rng(1)
    for step in range(400):
        item_id = f"i{rng.integers(0, 400)}"
        if rng.random() < 0.3:
            assert index.remove(item_id) == (item_id in truth)
            truth.pop(item_id, None)
        else:
            truth[item_id] = rng.normal(size=8).astype(np.float32)
            index.upsert(item_id, truth[item_id])
        if step % 50 == 0:
            index.maybe_rebuild(background=False)
        query = rng.normal(size=8).astype(np.float32)
        assert [i for i, _ in index.search(query, 10)] == exact(truth, query, 10)
    assert index.rebuilds >= 2 and len(index) == len(truth)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_reach_the_recall_target_on_clustered_data(kind: str) -> None:
    config = IndexConfig(dim=16, kind=kind, ivf_probe=32)
    index, truth = filled(config, 5_000)
    index.rebuild()
    _, queries = synthetic_catalogue(5_000, 16, seed=0, queries=50)

    assert index.kind == kind
    assert recall(index, truth, queries, 10) >= 0.95


def test_removed_and_replaced_items_are_never_returned_with_old_vectors() -> None:
    config = IndexConfig(dim=4, kind="hnsw")
    index, truth = filled(config, 500)
    index.rebuild()
    target = np.array([10.0, 0, 0, 0], dtype=np.float32)
    index.upsert("i7", target)  # i7 now points far along the first axis: the best match
    assert index.search(target, 1)[0][0] == "i7"
    index.upsert("i7", -target)
    assert "i7" not in {i for i, _ in index.search(target, 20)}
    assert index.remove("i7") and not index.remove("i7")
    assert "i7" not in {i for i, _ in index.search(-target, 20)} and "i7" not in index


def test_exclude_is_applied_and_k_is_still_filled() -> None:
    index, truth = filled(IndexConfig(dim=4, kind="flat"), 100)
    query = np.ones(4, dtype=np.float32)
    best = exact(truth, query, 5)

    got = [i for i, _ in index.search(query, 5, exclude=set(best[:3]))]

    assert got == exact(truth, query, 5, exclude=set(best[:3]))


def test_a_background_rebuild_never_loses_concurrent_updates() -> None:
    config = IndexConfig(dim=8, kind="hnsw", rebuild_delta_items=1, rebuild_delta_share=0.0)
    index, truth = filled(config, 3_000)
    rng = np.random.default_rng(2)
    assert index.rebuild(background=True)
    first = index._builder  # noqa: SLF001 - change things while it builds (not during the rebuild it chains)
    while first is not None and first.is_alive():
        victim = f"i{rng.integers(0, 3_200)}"
        index.remove(victim)
        truth.pop(victim, None)
        item_id = f"i{rng.integers(0, 3_200)}"
        truth[item_id] = rng.normal(size=8).astype(np.float32) * 3
        index.upsert(item_id, truth[item_id])
        if exact(truth, truth[item_id], 1) == [item_id]:  # fresh during the build
            assert index.search(truth[item_id], 1)[0][0] == item_id
    index.wait_for_rebuild()

    assert index.rebuilds >= 1 and len(index) == len(truth)  # changes made during it chain another
    for item_id, vector in truth.items():
        np.testing.assert_array_equal(index.vector(item_id), vector)


def test_unchanged_upserts_are_no_ops_in_main_and_in_the_delta() -> None:
    index, truth = filled(IndexConfig(dim=8, kind="flat"), 100)
    index.rebuild()
    index.upsert("fresh", np.ones(8, np.float32))  # in the delta
    version = index.version
    for item_id, vector in [*truth.items(), ("fresh", np.ones(8, np.float32))]:
        index.upsert(item_id, vector.copy())
    assert index.version == version and index.delta_items == 1
    # A caller that says the vector changed is taken at its word: no comparison, a new version.
    item_id, vector = next(iter(truth.items()))
    index.upsert(item_id, vector.copy(), changed=True)
    assert index.version == version + 1 and index.delta_items == 2


def test_changes_made_during_a_background_build_are_folded_in_without_further_upserts() -> None:
    config = IndexConfig(dim=8, kind="hnsw", rebuild_delta_items=50, rebuild_delta_share=0.0)
    index, truth = filled(config, 3_000)
    rng = np.random.default_rng(4)
    assert index.rebuild(background=True)
    for n in range(200):  # milliseconds, while the HNSW build takes far longer
        index.upsert(f"i{n}", rng.normal(size=8).astype(np.float32))
    assert index.rebuilding
    index.wait_for_rebuild()

    assert index.rebuilds >= 2 and index.delta_items <= 50 and not index.rebuilding


def test_searches_from_other_threads_run_during_a_rebuild() -> None:
    index, truth = filled(IndexConfig(dim=8, kind="flat"), 2_000)
    errors: list[BaseException] = []

    def query_forever(stop: threading.Event) -> None:
        rng = np.random.default_rng(3)
        try:
            while not stop.is_set():
                q = rng.normal(size=8).astype(np.float32)
                assert [i for i, _ in index.search(q, 5)] == exact(truth, q, 5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    stop = threading.Event()
    thread = threading.Thread(target=query_forever, args=(stop,))
    thread.start()
    for _ in range(3):
        index.rebuild(background=True)
        index.wait_for_rebuild()
    stop.set()
    thread.join()
    assert not errors and index.rebuilds == 3


def test_snapshot_round_trip_keeps_results_tombstones_and_metadata(tmp_path: Path) -> None:
    config = IndexConfig(dim=8, kind="hnsw")
    index, truth = filled(config, 1_000)
    index.rebuild()
    index.remove("i1")
    truth.pop("i1")
    index.upsert("new", np.ones(8, dtype=np.float32))
    truth["new"] = np.ones(8, dtype=np.float32)
    index.save(tmp_path, {"offsets": {"0": 41}})
    index.upsert("later", np.ones(8, dtype=np.float32))  # not in the snapshot

    loaded, metadata = LiveIndex.load(tmp_path, config)

    assert metadata == {"offsets": {"0": 41}} and loaded.version == index.version - 1
    assert len(loaded) == len(truth) and "i1" not in loaded and "later" not in loaded
    for q in synthetic_catalogue(1_000, 8, seed=0, queries=20)[1]:
        expected = [hit for hit in index.search(q, 11) if hit[0] != "later"][:10]
        got = loaded.search(q, 10)
        assert [i for i, _ in got] == [i for i, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-6)


def test_loading_refuses_a_snapshot_of_another_size_and_finds_none_in_an_empty_dir(tmp_path: Path) -> None:
    assert LiveIndex.load(tmp_path, IndexConfig(dim=8)) is None
    index, _ = filled(IndexConfig(dim=8), 10)
    index.save(tmp_path)
    index.save(tmp_path)  # replaces the first; one snapshot stays
    assert len(list(tmp_path.glob("snapshot-*"))) == 1
    with pytest.raises(ValueError, match="8-dimensional"):
        LiveIndex.load(tmp_path, IndexConfig(dim=4))


@pytest.mark.parametrize("vector", [[1.0, np.nan], [1.0, np.inf], [1.0, 2.0, 3.0]])
def test_invalid_vectors_are_refused(vector: list[float]) -> None:
    index = LiveIndex(IndexConfig(dim=2))
    with pytest.raises(ValueError, match="finite"):
        index.upsert("x", np.array(vector))
    assert len(index) == 0


operations = st.lists(st.tuples(st.sampled_from(["upsert", "remove", "rebuild"]), st.integers(0, 30),
                                st.integers(-5, 5), st.integers(-5, 5)), max_size=80)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_the_id_map_behaves_like_a_dict(ops: list[tuple[str, int, int, int]]) -> None:
    index = LiveIndex(IndexConfig(dim=2, kind="flat", rebuild_delta_items=3, rebuild_delta_share=0.0))
    model: dict[str, np.ndarray] = {}
    for op, key, x, y in ops:
        item_id = f"i{key}"
        if op == "upsert":
            model[item_id] = np.array([x, y], dtype=np.float32)
            index.upsert(item_id, model[item_id])
        elif op == "remove":
            assert index.remove(item_id) == (model.pop(item_id, None) is not None)
        else:
            index.maybe_rebuild(background=False)
        assert len(index) == len(model)
    for item_id, vector in model.items():
        np.testing.assert_array_equal(index.vector(item_id), vector)
    got = index.search(np.array([1.0, 0.5], dtype=np.float32), 40)
    assert sorted(i for i, _ in got) == sorted(model)
