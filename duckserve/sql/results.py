"""A statement's result as a cursor reads it: DuckDB's own result, read the way its reader asks.

A DuckDB statement's rows stay in DuckDB's result until a cursor fetches them, and then come as
DuckDB gives them: Python rows from DuckDB's ``fetchone``/``fetchmany``/``fetchall``, Arrow from
DuckDB's Arrow reader, pandas from DuckDB's ``df()``. Nothing converts them on the way.

One DuckDB connection holds one open result, and every cursor of a duckserve connection shares
that connection (one session). So before another statement runs, the open result is *released*:
its unread rows are put aside, as Arrow when DuckDB's Arrow holds every value of its column types
exactly, else as Python rows (HUGEINT, UHUGEINT, TIMETZ, BIT, UUID read back from Arrow differ);
a later read in the other form converts through DuckDB itself (``duckserve.sql.scratch``).

What a result's readers fetched is kept for ``RESULT_SCAN`` (the last results of a connection, each
up to ``KEEP_VALUES`` values), in the form it was fetched, and handed to a later statement as an
Arrow table of the result's own DuckDB types.
"""

from __future__ import annotations

import datetime
import re
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from duckserve import errors
from duckserve.sql.scratch import RESULT_SETTINGS, Scratch, arrow_reader

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

#: the most values (rows x columns) a result keeps for RESULT_SCAN
KEEP_VALUES = 2_000_000
#: rows per Arrow record batch when the reader does not say
BATCH_ROWS = 131_072
#: column types whose values do not survive DuckDB's default Arrow encoding unchanged
_NOT_ARROW_EXACT = re.compile(r"\b(U?HUGEINT|BIT|UUID|TIME WITH TIME ZONE|TIMETZ)\b", re.IGNORECASE)
#: column types whose Python values lose what DuckDB's Arrow holds (nanoseconds, months, members)
_NOT_PYTHON_EXACT = re.compile(r"\b(TIMESTAMP_NS|TIME_NS|TIMESTAMPTZ_NS|INTERVAL|UNION|TUPLE)\b|STRUCT\(\)",
                               re.IGNORECASE)

Description = list[tuple[Any, ...]]
ErrorTranslator = Callable[[Exception], errors.Error]


class Result:
    """One executed statement: its query id, its description and rows (None when it returns no rows)."""

    def __init__(self, query_id: str, sql: str, description: Description | None, rowcount: int,
                 ours: bool = False) -> None:
        self.query_id = query_id
        self.sql = sql
        self.description = description
        self.rowcount = rowcount
        self.ours = ours
        self.seconds = 0.0
        self.abandoned = False  # no cursor reads it any more

    @property
    def has_rows(self) -> bool:
        return self.description is not None

    @property
    def names(self) -> list[str]:
        return [d[0] for d in self.description or []]

    @property
    def types(self) -> list[Any]:
        return [d[1] for d in self.description or []]

    def _no_rows(self) -> errors.Error:
        return errors.ProgrammingError(
            f"the statement returned no result set, so there is nothing to fetch: {self.sql.strip()[:80]}")

    # -- what cursors read ----------------------------------------------------------------------
    def fetchone(self) -> tuple[Any, ...] | None:
        raise self._no_rows()

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        raise self._no_rows()

    def fetchall(self) -> list[tuple[Any, ...]]:
        raise self._no_rows()

    def arrow_table(self) -> pa.Table:
        raise self._no_rows()

    def record_batches(self, rows_per_batch: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        raise self._no_rows()

    def df(self) -> pd.DataFrame:
        raise self._no_rows()

    # -- what the connection asks -----------------------------------------------------------------
    def release(self) -> None:
        """Another statement needs the DuckDB connection: take what this result still holds out of it."""

    def kept_table(self) -> pa.Table:
        """The whole result for RESULT_SCAN, as Arrow of its DuckDB types."""
        raise errors.ProgrammingError(f"RESULT_SCAN: query {self.query_id} returned no rows to scan")


def _beyond_python(rows: list[tuple[Any, ...]], column: int) -> bool:
    """Whether a DATE or TIMESTAMP column holds a value Python cannot (DuckDB gives the largest or
    smallest Python date for infinity and dates past year 9999)."""
    extremes = (datetime.date.max, datetime.date.min, datetime.datetime.max, datetime.datetime.min)
    return any(_holds(row[column], extremes) for row in rows)


def _holds(value: Any, extremes: tuple[Any, ...]) -> bool:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.replace(tzinfo=None) in extremes if isinstance(value, datetime.datetime) else value in extremes
    if isinstance(value, (list, tuple)):
        return any(_holds(v, extremes) for v in value)
    if isinstance(value, dict):
        return any(_holds(v, extremes) for v in value.values())
    return False


class Buffer:
    """Rows held by duckserve, as Python rows, Arrow, or both; read from ``position`` on."""

    def __init__(self, scratch: Scratch, names: list[str], types: list[Any], rows: list[tuple[Any, ...]] | None = None,
                 table: pa.Table | None = None, settings: dict[str, str] | None = None) -> None:
        self.scratch, self.names, self.types = scratch, names, types
        self.rows, self.table, self.settings = rows, table, settings or {}
        self.position = 0

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else (self.table.num_rows if self.table is not None else 0)

    def _python(self) -> list[tuple[Any, ...]]:
        if self.rows is None:
            self.rows = self.scratch.rows(self.table) if self.table is not None else []
        return self.rows

    def arrow(self) -> pa.Table:
        if self.table is None:
            lossy = [f"{n} {t}" for i, (n, t) in enumerate(zip(self.names, self.types))
                     if _NOT_PYTHON_EXACT.search(str(t)) or _beyond_python(self.rows or [], i)]
            if lossy:
                raise errors.NotSupportedError(
                    "the unread rows of this result were put aside as Python values when another statement ran "
                    "(some of its types hold values DuckDB's Arrow cannot: "
                    f"{', '.join(n for n, t in zip(self.names, self.types) if _NOT_ARROW_EXACT.search(str(t)))}), and "
                    f"Python values lose part of {', '.join(lossy)}: Read the result in the form you need "
                    "before running another statement on the connection")
            self.table = self.scratch.arrow([self.rows or []], self.names, self.types, self.settings)
        return self.table

    def take(self, size: int | None) -> list[tuple[Any, ...]]:
        rows = self._python()
        end = len(rows) if size is None else min(len(rows), self.position + size)
        chunk = rows[self.position:end]
        self.position = end
        return chunk

    def take_arrow(self) -> pa.Table:
        table = self.arrow().slice(self.position)
        self.position = len(self)
        return table

    def take_batch(self, rows: int) -> pa.RecordBatch | None:
        if self.position >= len(self):
            return None
        table = self.arrow().slice(self.position, rows)
        self.position += table.num_rows
        return table.combine_chunks().to_batches()[0] if table.num_rows else None


class KeptResult(Result):
    """Rows duckserve holds itself: a result of one of duckserve's statements (Python rows and their
    Arrow table, both given), or a DuckDB result put aside."""

    def __init__(self, query_id: str, sql: str, description: Description, buffer: Buffer, ours: bool = True) -> None:
        super().__init__(query_id, sql, description, len(buffer), ours)
        self.buffer = buffer

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self.buffer.take(1)
        return rows[0] if rows else None

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        return self.buffer.take(size)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.buffer.take(None)

    def arrow_table(self) -> pa.Table:
        return self.buffer.take_arrow()

    def record_batches(self, rows_per_batch: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        while (batch := self.buffer.take_batch(rows_per_batch)) is not None:
            yield batch

    def df(self) -> pd.DataFrame:
        return self.buffer.scratch.df(self.buffer.take_arrow())

    def kept_table(self) -> pa.Table:
        if self.ours:
            return self.buffer.arrow()
        return self.buffer.scratch.arrow([self.buffer.rows if self.buffer.rows is not None else self.buffer.arrow()],
                                         self.names, self.types, {"arrow_lossless_conversion": "true"})


class DuckDBResult(Result):
    """The open result of the DuckDB connection, read through DuckDB's own fetch methods."""

    def __init__(self, query_id: str, sql: str, description: Description, rowcount: int,
                 con: duckdb.DuckDBPyConnection, scratch: Scratch, translate: ErrorTranslator,
                 lock: threading.RLock) -> None:
        super().__init__(query_id, sql, description, rowcount)
        self._con, self._scratch, self._translate = con, scratch, translate
        #: the connection's lock: a read of DuckDB's result and another thread's statement (which
        #: first puts this result aside) never interleave
        self._lock = lock
        self.live = True  # the rows are still in DuckDB's result
        self._reader: pa.RecordBatchReader | None = None
        self._buffer: Buffer | None = None  # the unread rows, once put aside
        self._kept: list[Any] | None = []  # what readers fetched while live (for RESULT_SCAN)
        self._kept_values = 0
        self._failed: errors.Error | None = None
        self.exhausted = False

    @property
    def rowcount(self) -> int:  # type: ignore[override]
        """-1 until every row has been read (the count is not known before), then the number of rows."""
        if self._rowcount >= 0:
            return self._rowcount
        if self._buffer is not None:  # read out, or put aside: every row is known
            return self._read + len(self._buffer)
        return self._read if self.exhausted else -1

    @rowcount.setter
    def rowcount(self, value: int) -> None:
        self._rowcount = value
        self._read = 0

    # -- keeping what was read ------------------------------------------------------------------
    def _keep(self, piece: Any, count: int) -> None:
        self._read += count
        if self._kept is None or not count:
            return
        self._kept_values += count * max(1, len(self.names))
        if self._kept_values > KEEP_VALUES:
            self._kept = None  # too large to keep for RESULT_SCAN
        else:
            self._kept.append(piece)

    def _guard(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Exception as exc:
            import duckdb

            if isinstance(exc, duckdb.Error):
                self.live, self.exhausted = False, True
                raise self._translate(exc) from exc
            raise

    # -- reading --------------------------------------------------------------------------------
    def fetchone(self) -> tuple[Any, ...] | None:
        with self._lock:
            return self._fetchone()

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._fetchmany(size)

    def fetchall(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._fetchall()

    def arrow_table(self) -> pa.Table:
        with self._lock:
            return self._arrow_table()

    def df(self) -> pd.DataFrame:
        with self._lock:
            return self._df()

    def release(self) -> None:
        with self._lock:
            self._release()

    def record_batches(self, rows_per_batch: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        while True:
            with self._lock:
                batch = self._next_batch(rows_per_batch)
            if batch is None:
                return
            yield batch

    def _fetchone(self) -> tuple[Any, ...] | None:
        if not self.live:
            return self._buffered().fetchone()
        if self._reader is not None:
            return self._rest_from_reader().fetchone()
        row = self._guard(self._con.fetchone)
        if row is None:
            self._finish()
        else:
            self._keep([row], 1)
        return row

    def _fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        if not self.live:
            return self._buffered().fetchmany(size)
        if self._reader is not None:
            return self._rest_from_reader().fetchmany(size)
        rows = self._guard(lambda: self._con.fetchmany(size))
        self._keep(rows, len(rows))
        if len(rows) < size:
            self._finish()
        return rows

    def _fetchall(self) -> list[tuple[Any, ...]]:
        if not self.live:
            return self._buffered().fetchall()
        if self._reader is not None:
            return self._rest_from_reader().fetchall()
        rows = self._guard(self._con.fetchall)
        fits = self._kept is not None and self._kept_values + len(rows) * max(1, len(self.names)) <= KEEP_VALUES
        self._keep(list(rows) if fits else rows, len(rows))  # a copy: the caller may change its list
        self._finish()
        return rows

    def _arrow_table(self) -> pa.Table:
        if not self.live:
            return self._buffered().arrow_table()
        reader = self._reader or self._guard(lambda: arrow_reader(self._con, BATCH_ROWS))
        self._reader = None
        table = self._guard(reader.read_all) if reader is not None else self._empty_table()
        self._keep(table, table.num_rows)
        self._finish()
        return table

    def _next_batch(self, rows_per_batch: int) -> pa.RecordBatch | None:
        if not self.live:
            assert self._buffer is not None
            return self._buffer.take_batch(rows_per_batch)
        if self._reader is None:
            self._reader = self._guard(lambda: arrow_reader(self._con, rows_per_batch))
            if self._reader is None:
                self._finish()
                return None
        try:
            batch = self._guard(self._reader.read_next_batch)
        except StopIteration:
            self._reader = None
            self._finish()
            return None
        self._keep(batch, batch.num_rows)
        return batch

    def _df(self) -> pd.DataFrame:
        if not self.live:
            return self._buffered().df()
        if self._reader is not None:
            return self._rest_from_reader().df()
        frame = self._guard(self._con.df)
        self._keep(frame, len(frame))
        self._finish()
        return frame

    def _empty_table(self) -> pa.Table:
        return self._scratch.arrow([], self.names, self.types)

    def _finish(self) -> None:
        self.live, self.exhausted = False, True
        if self._buffer is None:
            self._buffer = Buffer(self._scratch, self.names, self.types, rows=[])

    def _buffered(self) -> KeptResult:
        if self._failed is not None:
            raise self._failed
        assert self._buffer is not None
        return KeptResult(self.query_id, self.sql, self.description or [], self._buffer, ours=False)

    def _rest_from_reader(self) -> KeptResult:
        """A reader switched from Arrow batches to Python rows: the rest of the batches go aside."""
        self._release()
        return self._buffered()

    # -- the connection's side ------------------------------------------------------------------
    def _release(self) -> None:
        if not self.live:
            return
        try:
            if self.abandoned:
                self._drain_for_keeping()
            else:
                self._put_aside()
        except errors.Error as exc:
            # the rest of the rows failed in DuckDB (an error past the first rows): that is this
            # result's error, for its reader to meet, not the next statement's
            self.live, self._kept, self._failed = False, None, exc

    def _put_aside(self) -> None:
        if self._reader is not None:
            table = self._guard(self._reader.read_all)
            self._reader = None
            self._buffer = Buffer(self._scratch, self.names, self.types, table=table)
        elif not any(_NOT_ARROW_EXACT.search(str(t)) for t in self.types):
            reader = self._guard(lambda: arrow_reader(self._con, BATCH_ROWS))
            table = self._guard(reader.read_all) if reader is not None else self._empty_table()
            self._buffer = Buffer(self._scratch, self.names, self.types, table=table)
        else:
            rows = self._guard(self._con.fetchall)
            self._buffer = Buffer(self._scratch, self.names, self.types, rows=rows, settings=self._settings())
        self.live = False

    def _drain_for_keeping(self) -> None:
        """No reader wants the rest: read it for RESULT_SCAN while it fits, else leave it to DuckDB."""
        self.live = False
        if self._reader is not None:
            self._reader.close()
            self._reader = None
            self._kept = None
            return
        step = max(1, KEEP_VALUES // max(1, len(self.names)) // 8)
        while self._kept is not None:
            rows = self._guard(lambda: self._con.fetchmany(step))
            self._keep(rows, len(rows))
            if len(rows) < step:
                self.exhausted = True
                return

    def _settings(self) -> dict[str, str]:
        """The connection's settings that decide how these rows read as Arrow, for a later conversion."""
        try:
            names = ", ".join(f"'{n}'" for n in RESULT_SETTINGS)
            found = self._con.execute(f"SELECT name, value FROM duckdb_settings() WHERE name IN ({names})").fetchall()
        except Exception:  # an aborted transaction answers nothing: keep DuckDB's defaults
            return {}
        return {str(name): str(value) for name, value in found if value is not None}

    def kept_table(self) -> pa.Table:
        with self._lock:
            if self.live:
                self._release()
            return self._kept_table()

    def _kept_table(self) -> pa.Table:
        if self._kept is None or (not self.exhausted and self._buffer is None):
            raise errors.ProgrammingError(
                f"RESULT_SCAN: the result of query {self.query_id} was not kept: it has more than {KEEP_VALUES:,} "
                "values, or no cursor read it before the connection ran another statement")
        pieces = list(self._kept)
        if self._buffer is not None and len(self._buffer):
            pieces.append(self._buffer.rows if self._buffer.rows is not None else self._buffer.arrow())
        return self._scratch.arrow(pieces, self.names, self.types, {"arrow_lossless_conversion": "true"})
