"""The PEP 249 cursor: runs statements on its connection's session and reads their results.

Values come as DuckDB's own cursor returns them (``duckserve.sql.results``). For large results,
``fetch_record_batches(rows)`` and ``fetch_arrow_batches()`` stream Arrow batches straight from
DuckDB's result, without holding the result in another form beside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from duckserve import errors
from duckserve.sql.results import BATCH_ROWS, Result

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from duckserve.sql.connection import Connection


class Cursor:
    """PEP 249 cursor over its connection's session; every cursor of a connection shares it."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self._result: Result | None = None
        self._position = 0
        self._closed = False

    # -- PEP 249 attributes -----------------------------------------------------------------------
    @property
    def description(self) -> list[tuple[Any, ...]] | None:
        """Name and DuckDB type of each column (None for a statement that returns no rows)."""
        return self._result.description if self._result is not None else None

    @property
    def rowcount(self) -> int:
        """Rows changed by INSERT/UPDATE/DELETE/COPY; for a query, the rows it returned once all are
        read (-1 before, as DuckDB's cursor has it); -1 before any execute."""
        return self._result.rowcount if self._result is not None else -1

    @property
    def sfqid(self) -> str | None:
        """The last statement's query id (as Snowflake's connector names it)."""
        return self._result.query_id if self._result is not None else None

    query_id = sfqid

    @property
    def rownumber(self) -> int | None:
        return self._position if self._result is not None and self._result.has_rows else None

    @property
    def lastrowid(self) -> None:
        """PEP 249 extension: DuckDB has no row ids to report."""
        return None

    # -- execution --------------------------------------------------------------------------------
    def execute(self, operation: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> Cursor:
        self._check_open()
        self._abandon()
        results = self.connection.run(operation, parameters)
        for result in results[:-1]:
            result.abandoned = True  # a script's earlier results: kept for RESULT_SCAN, read by no cursor
        self._set(results[-1] if results else None)
        return self

    def executemany(self, operation: str, seq_of_parameters: Sequence[Sequence[Any] | dict[str, Any]]) -> Cursor:
        self._check_open()
        self._abandon()
        total, counted = 0, False
        last: Result | None = None
        for parameters in seq_of_parameters:
            if last is not None:
                last.abandoned = True
            for last in self.connection.run(operation, parameters):
                if last.rowcount >= 0:
                    total, counted = total + last.rowcount, True
        if last is not None and counted and not last.has_rows:
            last.rowcount = total
        self._set(last)
        return self

    def callproc(self, procname: str, parameters: Sequence[Any] = ()) -> Sequence[Any]:
        """PEP 249: call a function with the parameters; its result is the cursor's result set."""
        marks = ", ".join("?" for _ in parameters)
        self.execute(f"SELECT {procname}({marks})", list(parameters))
        return parameters

    def _abandon(self) -> None:
        if self._result is not None:
            self._result.abandoned = True

    def _set(self, result: Result | None) -> None:
        self._result = result
        self._position = 0

    def _readable(self) -> Result:
        self._check_open()
        if self._result is None:
            raise errors.InterfaceError("no statement has been executed on this cursor: call execute() first")
        return self._result

    # -- fetching ---------------------------------------------------------------------------------
    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._readable().fetchone()
        if row is not None:
            self._position += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        rows = self._readable().fetchmany(self.arraysize if size is None else size)
        self._position += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._readable().fetchall()
        self._position += len(rows)
        return rows

    def fetch_arrow_table(self) -> pa.Table:
        """The unread rows as DuckDB's Arrow table."""
        table = self._readable().arrow_table()
        self._position += table.num_rows
        return table

    arrow = fetch_arrow_table

    def fetch_record_batches(self, rows_per_batch: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The unread rows as a stream of Arrow record batches of up to ``rows_per_batch`` rows, read
        from DuckDB's result as they are consumed."""
        for batch in self._readable().record_batches(rows_per_batch):
            self._position += batch.num_rows
            yield batch

    def fetch_arrow_batches(self, rows_per_batch: int = BATCH_ROWS) -> Iterator[pa.Table]:
        """As Snowflake's connector: the unread rows as a stream of Arrow tables."""
        for batch in self.fetch_record_batches(rows_per_batch):
            yield pa.Table.from_batches([batch])

    def fetch_pandas_all(self) -> pd.DataFrame:
        """The unread rows as DuckDB's pandas DataFrame."""
        frame = self._readable().df()
        self._position += len(frame)
        return frame

    fetchdf = df = fetch_pandas_all

    def fetch_pandas_batches(self, rows_per_batch: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        """As Snowflake's connector: the unread rows as a stream of DataFrames."""
        for batch in self.fetch_record_batches(rows_per_batch):
            yield batch.to_pandas()

    def fetchnumpy(self) -> dict[str, np.ndarray]:
        frame = self.fetch_pandas_all()
        return {name: frame[name].to_numpy() for name in frame.columns}

    def setinputsizes(self, sizes: Any) -> None:
        """PEP 249: accepted and ignored."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """PEP 249: accepted and ignored."""

    def close(self) -> None:
        self._abandon()
        self._closed = True
        self._result = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InterfaceError("the cursor is closed: open a new one with connection.cursor()")
        self.connection._check_open()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while True:
            row = self.fetchone()
            if row is None:
                return
            yield row

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed and not self.connection.closed:
            self.close()
