"""Dataset loaders: tiny fixture files of every format, known parsed values, errors that name the line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.errors import StreamrecError
from streamrec.eval.datasets import (
    ColumnMap,
    DatasetError,
    Interaction,
    load_dataset,
    load_movielens,
    load_retailrocket,
    load_table,
)
from streamrec.eval.latent import LatentConfig, generate

DATA = Path(__file__).parent / "data"
SHOP_COLUMNS = ColumnMap(user="customer", item="sku", type="action", ts="when", value="stars", ts_unit="iso")
JSONL_COLUMNS = ColumnMap(user="uid", item="iid", type=None, ts="t", value=None, ts_unit="s",
                          default_type="view")


def pairs(interactions: list[Interaction]) -> list[tuple[str, str]]:
    return [(event.user_id, event.item_id) for event in interactions]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# --- MovieLens ------------------------------------------------------------------------------------


def test_movielens_100k_rows_become_ratings_in_time_order_with_ties_in_file_order() -> None:
    events = load_movielens(DATA / "movielens-100k")

    assert len(events) == 8
    assert events[0] == Interaction("22", "377", "rating", 878_887_116_000, 1.0)
    assert pairs(events)[3:5] == [("196", "242"), ("253", "465")], "same second: file order kept"
    assert pairs(events)[-1] == ("186", "302")
    assert [event.ts_ms for event in events] == sorted(event.ts_ms for event in events)


def test_movielens_1m_format_is_read_from_the_file_or_its_directory() -> None:
    events = load_movielens(DATA / "movielens-1m" / "ratings.dat")

    assert events == load_movielens(DATA / "movielens-1m")
    assert events[0] == Interaction("3", "3421", "rating", 978_298_147_000, 4.5)
    assert pairs(events)[2:4] == [("1", "1193"), ("1", "914")]
    assert {event.value for event in events} == {3.0, 4.5, 5.0}


def test_movielens_accepts_windows_line_endings_and_a_trailing_blank_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ratings.dat", "5::10::2::978300760\r\n6::11::4::978300700\r\n\r\n")

    assert load_movielens(path) == [Interaction("6", "11", "rating", 978_300_700_000, 4.0),
                                     Interaction("5", "10", "rating", 978_300_760_000, 2.0)]


# --- RetailRocket ---------------------------------------------------------------------------------


def test_retailrocket_events_map_to_streamrec_types_in_time_order() -> None:
    events = load_retailrocket(DATA / "retailrocket" / "events.csv")

    assert [(event.user_id, event.item_id, event.type) for event in events] == [
        ("257597", "355908", "view"), ("483", "1", "view"), ("111016", "248676", "add_to_cart"),
        ("111016", "248676", "purchase"), ("992329", "248676", "view")]
    assert events[0].ts_ms == 1_433_221_332_117, "RetailRocket timestamps are already milliseconds"
    assert all(event.value is None for event in events)


# --- generic tables -------------------------------------------------------------------------------


def test_csv_with_a_column_map_parses_iso_times_defaults_and_values() -> None:
    events = load_table(DATA / "shop.csv", SHOP_COLUMNS)

    assert events == [
        Interaction("c2", "p3", "click", 1_714_557_600_000),          # 12:00+02:00, no action
        Interaction("c1", "p3", "rating", 1_714_561_200_000, 4.5),    # naive time is UTC
        Interaction("c1", "p9", "purchase", 1_714_564_801_000),
    ]


def test_jsonl_with_a_column_map_reads_seconds_integer_ids_and_default_type() -> None:
    events = load_table(DATA / "shop.jsonl", JSONL_COLUMNS)

    assert events == [Interaction("8", "b", "view", 1_699_999_999_000),
                      Interaction("7", "a", "view", 1_700_000_000_500),
                      Interaction("7", "c", "view", 1_700_000_001_000)]


def test_tsv_without_timestamps_keeps_file_order_and_optional_columns_may_be_absent(tmp_path: Path) -> None:
    path = write(tmp_path, "log.tsv", "user_id\titem_id\nb\tx\na\ty\n")

    events = load_table(path, ColumnMap(ts=None))

    assert events == [Interaction("b", "x", "click", 0), Interaction("a", "y", "click", 1)]


def test_millisecond_timestamps_are_kept_as_integers(tmp_path: Path) -> None:
    path = write(tmp_path, "log.csv", "user_id,item_id,type,ts,value\nu,i,view,1700000000123,\n")

    assert load_table(path) == [Interaction("u", "i", "view", 1_700_000_000_123)]


# --- errors ---------------------------------------------------------------------------------------

BAD_FILES = [
    ("u.data", "1\t2\t3\t881250949\n1\t2\t3\n", 2, "expected 4 fields"),
    ("u.data", "1\t2\t3\t881250949\n1\t2\t3\t8\n1\t2\tabc\t881250949\n", 3, "rating is 'abc'"),
    ("u.data", "1\t2\tnan\t881250949\n", 1, "finite"),
    ("ratings.dat", "1::2::3::978300760\n1::2::3::soon\n", 2, "unix seconds"),
    ("events.csv", "timestamp,visitorid,event,itemid,transactionid\n1,2,view,3,\n1,2,click,3,\n", 3,
     "unknown event 'click'"),
    ("events.csv", "timestamp,visitorid,event,itemid,transactionid\n1,2,view\n", 2, "expected 5"),
    ("log.csv", "user,item_id,ts\nu,i,1\n", 1, "no column 'user_id'"),
    ("log.csv", "user_id,item_id,ts\nu,i,1\nu,i\n", 3, "expected 3 fields"),
    ("log.csv", "user_id,item_id,ts,type\nu,i,1,view\nu,i,2,rating\n", 3, "'rating' row has no value"),
    ("log.csv", "user_id,item_id,ts\nu,i,yesterday\n", 2, "not a finite number"),
    ("log.csv", "user_id,item_id,ts\n,i,5\n", 2, "'user_id' is missing or empty"),
    ("log.csv", "user_id,item_id,ts\nu,i,\n", 2, "timestamp column 'ts'"),
    ("log.jsonl", '{"user_id": "u", "item_id": "i", "ts": 1}\n{"user_id": "u",\n', 2, "not valid JSON"),
    ("log.jsonl", '[1, 2]\n', 1, "expected a JSON object"),
    ("log.jsonl", '{"user_id": null, "item_id": "i", "ts": 1}\n', 1, "'user_id' is missing"),
    ("log.jsonl", '{"user_id": true, "item_id": "i", "ts": 1}\n', 1, "'user_id' is True, not an id"),
    ("log.jsonl", '{"user_id": "u", "item_id": "i", "ts": 1, "value": Infinity}\n', 1, "finite"),
    ("log.jsonl", b'{"user_id": "u", "item_id": "i", "ts": 1}\n{"user_id": "\xff"}\n', 2, "not valid UTF-8"),
]


@pytest.mark.parametrize("name, text, line, problem", BAD_FILES,
                         ids=[f"{name}-{problem}" for name, _, _, problem in BAD_FILES])
def test_a_bad_row_raises_an_error_naming_file_line_problem_and_fix(
        tmp_path: Path, name: str, text: str | bytes, line: int, problem: str) -> None:
    path = write(tmp_path, name, text)

    with pytest.raises(DatasetError) as caught:
        load_dataset(path)

    message = str(caught.value)
    assert f"{path}, line {line}:" in message
    assert problem in message
    assert "Fix:" in message
    assert isinstance(caught.value, StreamrecError) and not caught.value.retriable


def test_iso_timestamp_error_names_the_unit_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "log.csv", "user_id,item_id,ts\nu,i,2024-13-45\n")

    with pytest.raises(DatasetError, match=r"line 2: timestamp '2024-13-45' is not ISO-8601.*ts_unit"):
        load_table(path, ColumnMap(ts_unit="iso"))


@pytest.mark.parametrize("loader", [load_movielens, load_retailrocket, load_table, load_dataset])
def test_a_missing_path_raises_dataset_error_naming_it(
        tmp_path: Path, loader: Callable[[Path], list[Interaction]]) -> None:
    missing = tmp_path / "nowhere" / "events.csv"

    with pytest.raises(DatasetError, match=r"'.*nowhere/events\.csv' does not exist"):
        loader(missing)


def test_unknown_formats_and_empty_directories_say_what_is_supported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot tell the dataset format.*synthetic"):
        load_dataset(write(tmp_path, "log.parquet", "x"))
    with pytest.raises(DatasetError, match="holds neither u.data .* nor ratings.dat"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="unknown table format '.txt'"):
        load_table(write(tmp_path, "log.txt", "x"))
    with pytest.raises(DatasetError, match="neither u.data"):
        load_movielens(tmp_path)


def test_retailrocket_loader_rejects_another_header(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", "user_id,item_id,ts\nu,i,1\n")

    with pytest.raises(DatasetError, match=r"line 1: header is .*load_table"):
        load_retailrocket(path)


def test_column_map_rejects_an_unknown_time_unit() -> None:
    with pytest.raises(ValueError, match="ts_unit is 'us'"):
        ColumnMap(ts_unit="us")  # type: ignore[arg-type]


# --- detection ------------------------------------------------------------------------------------


RETAILROCKET = DATA / "retailrocket" / "events.csv"


@pytest.mark.parametrize("source, loader, path", [
    (DATA / "movielens-100k", load_movielens, DATA / "movielens-100k" / "u.data"),
    (DATA / "movielens-100k" / "u.data", load_movielens, DATA / "movielens-100k"),
    (str(DATA / "movielens-1m" / "ratings.dat"), load_movielens, DATA / "movielens-1m"),
    (DATA / "retailrocket", load_retailrocket, RETAILROCKET),
    (RETAILROCKET, load_retailrocket, RETAILROCKET),
], ids=["ml100k-dir", "u.data", "ratings.dat-as-str", "retailrocket-dir", "events.csv"])
def test_load_dataset_detects_the_format(source: str | Path, loader: Callable[[Path], list[Interaction]],
                                         path: Path) -> None:
    assert load_dataset(source) == loader(path)


def test_load_dataset_passes_the_column_map_to_generic_tables() -> None:
    assert load_dataset(DATA / "shop.csv", SHOP_COLUMNS) == load_table(DATA / "shop.csv", SHOP_COLUMNS)


def test_an_events_csv_without_the_retailrocket_header_is_a_generic_table(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", "user_id,item_id,type,ts\nu,i,view,5\n")

    assert load_dataset(path) == [Interaction("u", "i", "view", 5)]


def test_load_dataset_generates_the_synthetic_stream_from_its_spec() -> None:
    expected = generate(LatentConfig(n_users=40, n_items=30, n_events=300, seed=1)).interactions

    assert load_dataset("synthetic:users=40,items=30,events=300,seed=1") == expected
    assert len(load_dataset("synthetic")) == LatentConfig().n_events


@pytest.mark.parametrize("spec, problem", [
    ("synthetic:people=5", "not key=value with a known key"),
    ("synthetic:users", "not key=value"),
    ("synthetic:users=many", "not a number"),
    ("synthetic:users=0", "n_users must be at least 1"),
    ("synthetic:new_users=1.5", "new_user_share must be in"),
])
def test_a_bad_synthetic_spec_raises_dataset_error(spec: str, problem: str) -> None:
    with pytest.raises(DatasetError, match=problem):
        load_dataset(spec)
