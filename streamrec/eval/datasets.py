"""Interaction logs for offline evaluation: MovieLens, RetailRocket, generic CSV/JSONL, synthetic.

Every loader returns a list of :class:`Interaction` sorted by ``ts_ms``, stable (ties keep file
order). Files are streamed line by line. A row that cannot be parsed raises :class:`DatasetError`
naming the file, the line and the fix.

>>> events = load_dataset("synthetic:users=20,items=10,events=50,seed=3")
>>> len(events), events[0].ts_ms <= events[-1].ts_ms
(50, True)
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal, NoReturn

from streamrec.errors import StreamrecError

#: Files :func:`load_movielens` looks for in a directory: 100K format, then 1M format.
MOVIELENS_FILES = ("u.data", "ratings.dat")
#: The header of RetailRocket's ``events.csv``.
RETAILROCKET_HEADER = ("timestamp", "visitorid", "event", "itemid", "transactionid")
#: RetailRocket event name -> streamrec event type.
RETAILROCKET_TYPES = {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"}
#: File suffixes :func:`load_table` reads, and their field delimiter (None: JSON lines).
TABLE_SUFFIXES: dict[str, str | None] = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".ndjson": None}

_BY_TIME = attrgetter("ts_ms")  # for sorted(): stable, so ties keep file order


class DatasetError(StreamrecError):
    """A dataset is missing, in an unknown format, or has a row that cannot be parsed.

    The message names the file (and the 1-based line number for a bad row) and
    says how to fix it. Not retriable: the file or the arguments must change.
    """


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user-item event of a recorded log."""

    user_id: str
    item_id: str
    type: str
    """Event type: "view", "click", "add_to_cart", "purchase", "rating" (tables may carry others)."""
    ts_ms: int
    """Event time, epoch milliseconds."""
    value: float | None = None
    """The rating for type "rating"; otherwise usually None."""


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which columns (CSV/TSV header names or JSON keys) hold each field of a generic table.

    ``type``, ``ts`` and ``value`` may be None when the table has no such column:
    every row then gets ``default_type``, its 0-based row index as ``ts_ms``
    (file order is event order), and no value. A ``type`` or ``value`` column
    missing from a CSV header, or a key missing from a JSON line, is treated
    the same way; a missing ``user``, ``item`` or ``ts`` column is an error.
    """

    user: str = "user_id"
    item: str = "item_id"
    type: str | None = "type"
    ts: str | None = "ts"
    value: str | None = "value"
    default_type: str = "click"
    """Type of rows without one."""
    ts_unit: Literal["ms", "s", "iso"] = "ms"
    """Epoch milliseconds, epoch seconds (may be fractional) or ISO-8601 (naive means UTC)."""

    def __post_init__(self) -> None:
        if self.ts_unit not in ("ms", "s", "iso"):
            raise ValueError(f"ColumnMap ts_unit is {self.ts_unit!r}; use 'ms' (epoch milliseconds), "
                             "'s' (epoch seconds) or 'iso' (ISO-8601 text)")


def row_error(path: Path, line: int, problem: str, fix: str) -> DatasetError:
    """A :class:`DatasetError` for line ``line`` (1-based) of ``path``."""
    return DatasetError(f"{path}, line {line}: {problem}. Fix: {fix}")


def require_path(path: Path, what: str = "dataset") -> Path:
    """Return ``path`` if it exists, else raise a :class:`DatasetError` naming it."""
    if not path.exists():
        raise DatasetError(f"{what} {str(path)!r} does not exist (resolved to {path.absolute()}). "
                           "Fix: check the path, or download the dataset there first.")
    return path


def read_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 file one at a time, decoded one by one so errors name their line."""
    require_path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise row_error(path, number, f"not valid UTF-8 ({error.reason} at byte {error.start})",
                                "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
            yield text.removeprefix("\ufeff") if number == 1 else text


def parse_finite(raw: object, path: Path, line: int, field: str) -> float:
    """``raw`` as a finite float, else a :class:`DatasetError` for ``field``."""
    try:
        number = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(raw, bool) or not math.isfinite(number):
        raise row_error(path, line, f"{field} is {raw!r}, not a finite number",
                        f"write {field} as a plain number such as 4 or 3.5")
    return number


def parse_ts_ms(raw: object, unit: str, path: Path, line: int) -> int:
    """Event time ``raw`` in ``unit`` ("ms", "s" or "iso") as epoch milliseconds."""
    if unit == "iso":
        try:
            moment = datetime.fromisoformat(str(raw).strip())
        except ValueError:
            raise row_error(path, line, f"timestamp {raw!r} is not ISO-8601",
                            "write it like 2024-05-01T12:00:00Z, or set ColumnMap(ts_unit=...) "
                            "to 'ms' or 's' for epoch numbers") from None
        return round((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)
    number = parse_finite(raw, path, line, f"timestamp (epoch {'milliseconds' if unit == 'ms' else 'seconds'})")
    return round(number if unit == "ms" else number * 1000)


def parse_id(raw: object, path: Path, line: int, field: str) -> str:
    """A non-empty user or item id; JSON integers become their decimal string."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return sys.intern(str(raw))
    if isinstance(raw, str) and raw.strip():
        return sys.intern(raw.strip())
    problem = f"{field!r} is missing or empty" if raw is None else f"{field!r} is {raw!r}, not an id"
    raise row_error(path, line, problem, f"give every row a {field!r} (a string or an integer), or name "
                    "the right column with ColumnMap")


def find_movielens_file(path: Path) -> Path:
    """``path`` itself if it is a file, else the first of :data:`MOVIELENS_FILES` inside it."""
    require_path(path, "MovieLens dataset")
    if path.is_file():
        return path
    for name in MOVIELENS_FILES:
        if (path / name).is_file():
            return path / name
    raise DatasetError(f"{path} holds neither u.data (MovieLens 100K) nor ratings.dat (MovieLens 1M). "
                       "Fix: point at the unpacked ml-100k or ml-1m directory, or at the file itself.")


def parse_movielens_line(text: str, path: Path, line: int) -> Interaction:
    """One ``user item rating unix_seconds`` row, tab/space- or ``::``-separated."""
    fields = text.split("::") if "::" in text else text.split()
    try:
        user, item, rating, seconds = fields
        user, item = user.strip(), item.strip()
        value, ts_ms = float(rating), int(seconds) * 1000  # both ignore surrounding whitespace
    except ValueError:
        value = math.nan
    if math.isfinite(value) and user and item:  # NaN when unpacking failed: user is then unset
        return Interaction(sys.intern(user), sys.intern(item), "rating", ts_ms, value)
    movielens_row_error(fields, text, path, line)


def movielens_row_error(fields: list[str], text: str, path: Path, line: int) -> NoReturn:
    """Raise a :class:`DatasetError` saying what is wrong with a MovieLens row that failed to parse."""
    if len(fields) != 4:
        raise row_error(path, line, f"expected 4 fields (user, item, rating, unix seconds), got "
                        f"{len(fields)}: {text.strip()[:80]!r}", "use tab-separated 'user item rating "
                        "seconds' (u.data) or 'user::item::rating::seconds' (ratings.dat)")
    parse_id(fields[0], path, line, "user id")
    parse_id(fields[1], path, line, "item id")
    parse_finite(fields[2], path, line, "rating")
    raise row_error(path, line, f"timestamp {fields[3].strip()!r} is not whole unix seconds",
                    "the 4th field must be an integer number of seconds since 1970")


def load_movielens(path: Path) -> list[Interaction]:
    """Load MovieLens ratings as interactions of type "rating".

    Parameters
    ----------
    path
        A directory holding ``u.data`` (100K: tab-separated ``user item rating
        unix_seconds``) or ``ratings.dat`` (1M/10M: ``user::item::rating::unix_seconds``),
        or either file itself.

    Returns
    -------
    list of Interaction
        Sorted by ``ts_ms`` (seconds * 1000); ``value`` is the rating; ids are strings.
    """
    file = find_movielens_file(Path(path))
    interactions = [parse_movielens_line(text, file, line)
                    for line, text in enumerate(read_lines(file), start=1) if text.strip()]
    return sorted(interactions, key=_BY_TIME)


@dataclass(frozen=True, slots=True)
class ItemMetadata:
    """What a dataset says about an item: its categories (genres) and title."""

    categories: tuple[str, ...] = ()
    title: str | None = None


def load_movielens_items(path: Path) -> dict[str, ItemMetadata]:
    """Titles and genres of MovieLens items, by item id; empty when the files are absent.

    Reads ``u.item`` with ``u.genre`` (100K: ``id|title|date|video|url|`` then one 0/1 flag
    per genre) or ``movies.dat`` (1M: ``id::title::Genre|Genre``) next to the ratings.
    MovieLens ships these files in Latin-1.
    """
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    if (directory / "u.item").is_file() and (directory / "u.genre").is_file():
        genres = [line.split("|")[0] for line in (directory / "u.genre").read_text("latin-1").splitlines()
                  if line.strip()]
        items = {}
        for line in (directory / "u.item").read_text("latin-1").splitlines():
            fields = line.split("|")
            if len(fields) == 5 + len(genres):
                flags = fields[5:]
                items[fields[0]] = ItemMetadata(tuple(g for g, flag in zip(genres, flags, strict=True) if flag == "1"),
                                                fields[1] or None)
        return items
    if (directory / "movies.dat").is_file():
        items = {}
        for line in (directory / "movies.dat").read_text("latin-1").splitlines():
            fields = line.split("::")
            if len(fields) == 3:
                items[fields[0]] = ItemMetadata(tuple(g for g in fields[2].split("|") if g), fields[1] or None)
        return items
    return {}


def is_retailrocket_header(names: list[str]) -> bool:
    """Whether CSV header ``names`` are RetailRocket's ``events.csv`` header."""
    return tuple(name.strip().lower() for name in names) == RETAILROCKET_HEADER


def parse_retailrocket_row(row: list[str], path: Path, line: int) -> Interaction:
    """One ``timestamp,visitorid,event,itemid,transactionid`` row."""
    if len(row) != len(RETAILROCKET_HEADER):
        raise row_error(path, line, f"expected 5 comma-separated fields, got {len(row)}: {row[:6]}",
                        "each row needs timestamp,visitorid,event,itemid,transactionid "
                        "(transactionid may be empty)")
    timestamp, visitor, event, item, _transaction = row
    kind = RETAILROCKET_TYPES.get(event.strip())
    if kind is None:
        raise row_error(path, line, f"unknown event {event!r}",
                        f"use one of {sorted(RETAILROCKET_TYPES)}, or load the file with load_table")
    return Interaction(parse_id(visitor, path, line, "visitorid"), parse_id(item, path, line, "itemid"),
                       kind, parse_ts_ms(timestamp, "ms", path, line))


def load_retailrocket(path: Path) -> list[Interaction]:
    """Load RetailRocket's ``events.csv`` (view / addtocart / transaction events).

    Parameters
    ----------
    path
        The ``events.csv`` file, with header ``timestamp,visitorid,event,itemid,transactionid``;
        ``timestamp`` is epoch milliseconds.

    Returns
    -------
    list of Interaction
        Sorted by ``ts_ms``; view -> "view", addtocart -> "add_to_cart",
        transaction -> "purchase"; ``value`` is None.
    """
    path = require_path(Path(path), "RetailRocket events file")
    reader = csv.reader(read_lines(path))
    if not is_retailrocket_header(header := next(reader, [])):
        raise row_error(path, 1, f"header is {header}, not {list(RETAILROCKET_HEADER)}",
                        "pass RetailRocket's events.csv unchanged, or load other CSVs with load_table")
    interactions = [parse_retailrocket_row(row, path, reader.line_num) for row in reader if row]
    return sorted(interactions, key=_BY_TIME)


Row = tuple[int, Callable[[str | None], Any]]
"""A table row: its 1-based line number and ``get(column)``, the cell or None when absent/empty."""


def make_interaction(get: Callable[[str | None], Any], columns: ColumnMap, path: Path, line: int,
                     row_index: int) -> Interaction:
    """Build one interaction from a table row (see :data:`Row`); ``row_index`` counts rows from 0."""
    user = parse_id(get(columns.user), path, line, columns.user)
    item = parse_id(get(columns.item), path, line, columns.item)
    kind = get(columns.type)
    kind = columns.default_type if kind is None else str(kind).strip() or columns.default_type
    if columns.ts is None:
        ts_ms = row_index
    elif (raw_ts := get(columns.ts)) is None:
        raise row_error(path, line, f"timestamp column {columns.ts!r} is missing or empty",
                        "give every row a timestamp, or pass ColumnMap(ts=None) to use file order")
    else:
        ts_ms = parse_ts_ms(raw_ts, columns.ts_unit, path, line)
    raw_value = get(columns.value)
    value = None if raw_value is None else parse_finite(raw_value, path, line, f"value {columns.value!r}")
    if kind == "rating" and value is None:
        raise row_error(path, line, "a 'rating' row has no value",
                        f"fill column {columns.value!r}, or name the rating column with ColumnMap(value=...)")
    return Interaction(user, item, sys.intern(kind), ts_ms, value)


def header_positions(header: list[str], columns: ColumnMap, path: Path) -> dict[str, int]:
    """Column name -> position; a missing user, item or ts column raises :class:`DatasetError`."""
    positions = {name.strip(): index for index, name in enumerate(header)}
    for column in (columns.user, columns.item, columns.ts):
        if column is not None and column not in positions:
            raise row_error(path, 1, f"the header has no column {column!r} (it has {list(positions)})",
                            "rename the column, or pass ColumnMap(user=..., item=..., ts=...) with the "
                            "file's column names (ts=None if it has no timestamps)")
    return positions


def delimited_rows(path: Path, delimiter: str, columns: ColumnMap) -> Iterator[Row]:
    """The rows of a CSV/TSV file with a header row, in file order."""
    reader = csv.reader(read_lines(path), delimiter=delimiter)
    positions = header_positions(next(reader, []), columns, path)
    for row in filter(None, reader):
        if len(row) != len(positions):
            raise row_error(path, reader.line_num, f"expected {len(positions)} fields like the header, "
                            f"got {len(row)}", "quote cells holding the delimiter, and give every row "
                            "as many cells as the header")

        def get(column: str | None, row: list[str] = row) -> str | None:
            index = positions.get(column) if column is not None else None
            return None if index is None or not row[index].strip() else row[index]

        yield reader.line_num, get


def json_rows(path: Path) -> Iterator[Row]:
    """The objects of a JSON-lines file, one per non-blank line, in file order."""
    for line, text in enumerate(read_lines(path), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise row_error(path, line, f"not valid JSON ({error.msg} at column {error.colno})",
                            "write one JSON object per line") from None
        if not isinstance(row, dict):
            raise row_error(path, line, f"expected a JSON object, got {type(row).__name__}",
                            "write one JSON object per line, e.g. {\"user_id\": \"u1\", \"item_id\": \"i1\"}")

        def get(column: str | None, row: dict[str, Any] = row) -> Any:
            value = row.get(column) if column is not None else None
            return None if value == "" else value

        yield line, get


def load_table(path: Path, columns: ColumnMap = ColumnMap()) -> list[Interaction]:
    """Load a generic interaction table: ``.csv`` / ``.tsv`` with a header row, or ``.jsonl``.

    Parameters
    ----------
    path
        The file; its suffix picks the format (``.ndjson`` is read as JSON lines).
    columns
        Which columns hold which field, and the timestamp unit; see :class:`ColumnMap`.

    Returns
    -------
    list of Interaction
        Sorted by ``ts_ms``, stable. Type "rating" rows must carry a value.
    """
    path = require_path(Path(path))
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DatasetError(f"{path}: unknown table format {suffix!r}. "
                           f"Fix: use one of {sorted(TABLE_SUFFIXES)} (rename the file if it is one).")
    delimiter = TABLE_SUFFIXES[suffix]
    rows = json_rows(path) if delimiter is None else delimited_rows(path, delimiter, columns)
    return sorted((make_interaction(get, columns, path, line, index)
                   for index, (line, get) in enumerate(rows)), key=_BY_TIME)


def load_synthetic(spec: str) -> list[Interaction]:
    """Interactions of :func:`streamrec.eval.latent.generate` for a ``synthetic[:k=v,...]`` spec."""
    from streamrec.eval.latent import config_from_spec, generate  # here: latent imports this module

    try:
        return generate(config_from_spec(spec)).interactions
    except ValueError as error:
        raise DatasetError(f"synthetic dataset {spec!r}: {error}") from None


def load_dataset(source: str | Path, columns: ColumnMap | None = None) -> list[Interaction]:
    """Load a dataset, detecting its format.

    Parameters
    ----------
    source
        - a directory or file with ``u.data`` / ``ratings.dat``: MovieLens;
        - a file named ``events.csv`` with RetailRocket's header (or a directory
          holding one): RetailRocket;
        - any other ``.csv`` / ``.tsv`` / ``.jsonl`` file: :func:`load_table`;
        - the string ``"synthetic"`` or ``"synthetic:users=500,items=300,events=20000,seed=1"``
          (also ``dim``, ``zipf``, ``drift``, ``new_users``): the latent-factor generator.
    columns
        Column mapping for generic tables; ignored by the other formats.

    Returns
    -------
    list of Interaction
        Sorted by ``ts_ms``, stable.
    """
    if isinstance(source, str) and source.strip().partition(":")[0] == "synthetic":
        return load_synthetic(source.strip())
    path = require_path(Path(source))
    if path.is_dir() and not any((path / name).is_file() for name in MOVIELENS_FILES):
        path = path / "events.csv" if (path / "events.csv").is_file() else path
    if path.is_dir() or path.name in MOVIELENS_FILES:
        return load_movielens(path)
    if path.name == "events.csv" and is_retailrocket_header(next(csv.reader(read_lines(path)), [])):
        return load_retailrocket(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return load_table(path, columns or ColumnMap())
    raise DatasetError(f"{path}: cannot tell the dataset format. Fix: pass a MovieLens u.data/ratings.dat, "
                       f"a RetailRocket events.csv, a {'/'.join(TABLE_SUFFIXES)} table, or 'synthetic'.")
