"""A private in-memory DuckDB that converts kept rows between Python and Arrow as DuckDB would.

A DuckDB result is read once, in the form its reader asks for (Python rows or Arrow). When the
other form is wanted later (a result kept for ``RESULT_SCAN``, or put aside because another
statement needed the connection), the conversion goes through DuckDB again, never through
pyarrow's or Python's own idea of a type: rows are appended to a table of the result's own
DuckDB types, Arrow is read by DuckDB's Arrow scan. This database is duckserve's alone; nothing
of it is visible in the user's catalog.
"""

from __future__ import annotations

import datetime
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

#: the settings of a connection that decide how its results read as Arrow or Python
RESULT_SETTINGS = ("TimeZone", "Calendar", "arrow_lossless_conversion", "produce_arrow_string_view",
                   "arrow_large_buffer_size", "arrow_output_list_view", "arrow_output_version")

T = TypeVar("T")


def arrow_reader(con: duckdb.DuckDBPyConnection, rows_per_batch: int) -> pa.RecordBatchReader | None:
    """DuckDB's Arrow reader over the rest of the connection's open result (None when it is read out).

    ``to_arrow_reader`` warns that a DB-API result makes an extra copy: DuckDB suggests the relation
    API instead, which would run the statement differently; the reader is what this result has."""
    private = getattr(con, "_result_as_arrow", None)  # what to_arrow_reader calls, without the warning
    if private is not None:
        return private(rows_per_batch, reader=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return con.to_arrow_reader(rows_per_batch)

def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def arrow_time_zone(schema: pa.Schema) -> str | None:
    """The time zone DuckDB wrote into a TIMESTAMPTZ column of this schema (its session's TimeZone)."""
    def find(t: pa.DataType) -> str | None:
        if pa.types.is_timestamp(t) and t.tz:
            return str(t.tz)
        for i in range(t.num_fields if hasattr(t, "num_fields") else 0):
            found = find(t.field(i).type)
            if found:
                return found
        return None

    for field in schema:
        zone = find(field.type)
        if zone:
            return zone
    return None


def _as_text(value: Any) -> Any:
    """Values DuckDB's Python conversion does not take back as it gave them, as text DuckDB casts:
    a TIMETZ with a negative offset (``-15:59``), and TIMESTAMPTZ infinity (given as a naive datetime)."""
    if isinstance(value, datetime.time) and value.tzinfo is not None:
        return value.isoformat()
    if isinstance(value, datetime.datetime) and value.tzinfo is None and value in (datetime.datetime.max,
                                                                                    datetime.datetime.min):
        return "infinity" if value == datetime.datetime.max else "-infinity"
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_text(v) for k, v in value.items()}
    return value


def appendable(rows: list[tuple[Any, ...]], types: Sequence[Any]) -> list[tuple[Any, ...]]:
    if not any("WITH TIME ZONE" in str(t) for t in types):
        return rows
    return [tuple(_as_text(v) for v in row) for row in rows]


class Scratch:
    """One private DuckDB connection per duckserve connection, opened on first use."""

    def __init__(self) -> None:
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = duckdb.connect(":memory:")
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @staticmethod
    def _set(con: duckdb.DuckDBPyConnection, settings: dict[str, str]) -> None:
        for name, value in settings.items():
            if name in RESULT_SETTINGS:
                con.execute(f"SET {name} = '{value.replace(chr(39), chr(39) * 2)}'")

    @staticmethod
    def _append(con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]], names: Sequence[str],
                types: Sequence[Any]) -> None:
        try:
            appender = con.appender("__kept")
            appender.append_rows(appendable(rows, types))
            appender.flush()
        except duckdb.Error as exc:
            from duckserve.errors import NotSupportedError

            raise NotSupportedError(
                f"these rows were read as Python values and cannot be turned back into DuckDB's types: {exc}. "
                "Python values lose what some types carry (a UNION's member, a TUPLE's field names, an "
                f"INTERVAL's months); the columns are {', '.join(f'{n} {t}' for n, t in zip(names, types))}. "
                "Read the result in the form you need before running another statement on the connection"
            ) from exc

    def _read(self, table: pa.Table, read: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """``read`` of ``SELECT *`` over the table, in the time zone its TIMESTAMPTZ columns were written in."""
        with self._lock:
            con = self._connection()
            zone = arrow_time_zone(table.schema)
            if zone:
                con.execute(f"SET TimeZone = '{zone}'")
            con.register("__piece", table)
            try:
                return read(con.execute("SELECT * FROM __piece"))
            finally:
                con.unregister("__piece")

    def rows(self, table: pa.Table) -> list[tuple[Any, ...]]:
        """The table's rows as DuckDB's Python conversion gives them."""
        return self._read(table, lambda result: result.fetchall())

    def df(self, table: pa.Table) -> Any:
        """The table as DuckDB's pandas DataFrame."""
        return self._read(table, lambda result: result.df())

    def arrow(self, pieces: Sequence[Any], names: Sequence[str], types: Sequence[Any],
              settings: dict[str, str] | None = None) -> pa.Table:
        """The pieces (lists of Python rows, Arrow tables or batches, in order) as one Arrow table of
        the result's DuckDB types, encoded with ``settings`` (a connection's RESULT_SETTINGS)."""
        with self._lock:
            con = self._connection()
            self._set(con, settings or {})
            columns = ", ".join(f"c{i} {t}" for i, t in enumerate(types))
            con.execute(f"CREATE OR REPLACE TABLE __kept ({columns})")
            try:
                for piece in pieces:
                    if isinstance(piece, list):
                        self._append(con, piece, names, types)
                    else:
                        con.register("__piece", piece)
                        try:
                            con.execute("INSERT INTO __kept SELECT * FROM __piece")
                        except duckdb.Error as exc:
                            from duckserve.errors import NotSupportedError

                            raise NotSupportedError(
                                f"these rows were read as Arrow, whose encoding does not hold every value of "
                                f"their DuckDB types ({exc}); read the result as Python rows (fetchall) to keep "
                                "it exact") from exc
                        finally:
                            con.unregister("__piece")
                table = con.sql("SELECT * FROM __kept").to_arrow_table()
            finally:
                con.execute("DROP TABLE IF EXISTS __kept")
                for name in settings or {}:
                    if name in RESULT_SETTINGS:
                        con.execute(f"RESET {name}")
            return table.rename_columns(list(names))
