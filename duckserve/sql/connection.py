"""The PEP 249 connection: DuckDB for data, the account catalog for our statements.

A script is split into statements; ours go to the control plane and come back as Arrow tables,
DuckDB's go to DuckDB after the token rewrites in ``duckserve.sql.rewrite``. Every statement gets
a query id, so ``RESULT_SCAN(LAST_QUERY_ID())`` reads the previous result like a table.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from duckserve import errors
from duckserve.engine.account import Account
from duckserve.engine.results import Rows
from duckserve.sql import executor, parser, rewrite, splitter

if TYPE_CHECKING:
    import pandas as pd

#: how many earlier results RESULT_SCAN can reach
RESULT_HISTORY = 32

_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}


def rows_to_arrow(rows: Rows) -> pa.Table:
    arrays = []
    for index, column in enumerate(rows.columns):
        values = [r[index] for r in rows.rows]
        declared = _ARROW_TYPES.get(rows.types.get(column, ""))
        if declared is None and all(v is None for v in values):
            declared = pa.string()
        arrays.append(pa.array(values, type=declared))
    return pa.Table.from_arrays(arrays, names=list(rows.columns))


def translate_duckdb_error(exc: Exception, sql: str) -> errors.Error:
    """Map a DuckDB exception onto the PEP 249 tree, keeping DuckDB's own message."""
    message = str(exc)
    if isinstance(exc, (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                        duckdb.SyntaxException)):
        return errors.ProgrammingError(message)
    if isinstance(exc, duckdb.ConstraintException):
        return errors.IntegrityError(message)
    if isinstance(exc, (duckdb.ConversionException, duckdb.OutOfRangeException, duckdb.InvalidInputException,
                        duckdb.TypeMismatchException)):
        return errors.DataError(message)
    if isinstance(exc, (duckdb.IOException, duckdb.InterruptException, duckdb.OutOfMemoryException)):
        return errors.OperationalError(message)
    if isinstance(exc, duckdb.NotImplementedException):
        return errors.NotSupportedError(message)
    if isinstance(exc, errors.Error):
        return exc
    return errors.DatabaseError(message)


@dataclass
class Result:
    """One executed statement: its id, its rows as Arrow (None for statements without rows)."""

    query_id: str
    sql: str
    table: pa.Table | None
    rowcount: int
    ours: bool
    seconds: float


class Connection:
    """PEP 249 connection over one DuckDB database and the account in ``home``."""

    def __init__(self, database: str = ":memory:", home: str | None = None, user: str | None = None,
                 role: str | None = None, warehouse: str | None = None, read_only: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        from duckserve.engine.services import Services
        from duckserve.sql.model_functions import ModelFunctions
        from duckserve.sql.service_functions import ServiceFunctions

        self.account = Account(home)
        self.services = Services(self.account)
        self.session = self.account.open_session(user, role, warehouse)
        try:
            self.duckdb = duckdb.connect(database, read_only=read_only, config=config or {})
        except duckdb.Error as exc:
            raise errors.OperationalError(f"cannot open DuckDB database {database!r}: {exc}") from exc
        self.database = database
        self._lock = threading.RLock()
        self._results: OrderedDict[str, str] = OrderedDict()  # query id -> registered relation name
        self._query_ids: list[str] = []
        self._closed = False
        self.functions = ServiceFunctions(self)
        self._in_transaction = False  # an explicit BEGIN is open (DuckDB cannot be asked cheaply)
        self.model_functions = ModelFunctions(self)

    # -- PEP 249 ----------------------------------------------------------------------------------
    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.duckdb.close()
        finally:
            self.account.catalog.close()

    def commit(self) -> None:
        self._check_open()
        self._end_transaction("COMMIT")

    def rollback(self) -> None:
        self._check_open()
        self._end_transaction("ROLLBACK")

    def _end_transaction(self, verb: str) -> None:
        with self._lock:
            self._transaction_ended(rolled_back=verb == "ROLLBACK")
            try:
                self.duckdb.execute(verb)
            except duckdb.TransactionException:
                pass  # no transaction open: PEP 249 commit/rollback are then no-ops
            except duckdb.Error as exc:
                raise translate_duckdb_error(exc, verb) from exc

    def execute(self, operation: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> Cursor:
        """Shortcut: a new cursor that has executed ``operation``."""
        return self.cursor().execute(operation, parameters)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InterfaceError("the connection is closed: open a new one with duckserve.connect()")

    # -- running SQL ------------------------------------------------------------------------------
    def run(self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> list[Result]:
        """Run every statement of a script; parameters bind to a single DuckDB statement."""
        self._check_open()
        statements = splitter.split(sql)
        if parameters and len(statements) > 1:
            raise errors.ProgrammingError("parameters can only be bound to a single statement; split the script")
        return [self.run_statement(s, parameters) for s in statements]

    def run_statement(self, statement: splitter.Statement,
                      parameters: Sequence[Any] | dict[str, Any] | None = None) -> Result:
        with self._lock:
            started = time.perf_counter()
            query_id = str(uuid.uuid4())
            if parameters and parser.is_ours(statement):
                raise errors.ProgrammingError(
                    f"{statement.text.split()[0].upper()} statements of duckserve take no parameters: "
                    "write the values into the statement")
            ours = parser.parse(statement)
            if ours is not None:
                shown = rows_to_arrow(executor.execute(self, ours))
                table: pa.Table | None = shown
                rowcount = shown.num_rows
            else:
                table, rowcount = self._run_duckdb(statement, parameters)
            self._remember(query_id, table)
            return Result(query_id, statement.text, table, rowcount, ours is not None,
                          time.perf_counter() - started)

    def _run_duckdb(self, statement: splitter.Statement,
                    parameters: Sequence[Any] | dict[str, Any] | None) -> tuple[pa.Table | None, int]:
        self.functions.begin()
        text = rewrite.rewrite(statement, _RewriteContext(self),
                               [*rewrite.REWRITES, self.functions.rewrite, self.model_functions.rewrite])
        # the session's own setting (SET threads = n), put back after any change made for the calls
        threads = user_threads = self._threads() if self.functions.active else 0
        try:
            prefetched = bool(self.functions.active) and self._prefetch(statement, text, parameters, user_threads)
            if self.functions.active and not prefetched:
                # chunk by chunk, DuckDB calls the UDF from as many threads as the query runs on:
                # make that as many as batches may be in flight (a prefetch sends its own batches)
                threads = max(user_threads, self.functions.parallelism())
            with self._duckdb_threads(threads, user_threads):
                relation = self.duckdb.sql(text, params=parameters) if parameters else self.duckdb.sql(text)
                self._track_transaction(statement)
                if relation is None:
                    return None, -1
                table = relation.to_arrow_table()
        except duckdb.Error as exc:
            if self.functions.error is not None:
                raise self.functions.error from exc
            from duckserve.sql.model_functions import explain_udf_error

            raise (explain_udf_error(exc, self) or translate_duckdb_error(exc, text)) from exc
        except KeyboardInterrupt:
            self.functions.cancel()
            self.duckdb.interrupt()
            raise
        first = statement.tokens[0].text.upper()
        if table.column_names == ["Count"] and table.num_rows == 1 and first in ("INSERT", "UPDATE", "DELETE", "CREATE", "COPY", "MERGE"):
            return table, int(table.column(0)[0].as_py() or 0)
        return table, table.num_rows

    def _track_transaction(self, statement: splitter.Statement) -> None:
        first = statement.tokens[0].text.upper()
        if first in ("BEGIN", "START"):
            self._in_transaction = True
        elif first in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            self._transaction_ended(rolled_back=first in ("ROLLBACK", "ABORT"))

    def _transaction_ended(self, rolled_back: bool) -> None:
        self._in_transaction = False
        # a rollback also drops the UDFs registered since BEGIN
        self.functions.udfs.transaction_ended(rolled_back)
        self.model_functions.udfs.transaction_ended(rolled_back)

    def _threads(self) -> int:
        return int(self.duckdb.sql("SELECT current_setting('threads')").fetchall()[0][0])

    @contextmanager
    def _duckdb_threads(self, threads: int, user_threads: int) -> Iterator[None]:
        """DuckDB runs on ``threads`` inside the block, then on the session's own ``user_threads``."""
        if threads == user_threads:
            yield
            return
        self.duckdb.execute(f"SET threads = {threads}")
        try:
            yield
        finally:
            self.duckdb.execute(f"SET threads = {user_threads}")

    def _prefetch(self, statement: splitter.Statement, text: str,
                  parameters: Sequence[Any] | dict[str, Any] | None, user_threads: int) -> bool:
        """A first pass that gathers service-function arguments, so they travel in large batches
        (see ``service_functions.Prefetch``). A writing statement's first pass is rolled back.
        False when the statement is not prefetched (its calls then go chunk by chunk)."""
        from duckserve.sql.service_functions import READ_ONLY_STARTS, WRITING_STARTS

        first = statement.tokens[0].text.upper()
        if first not in READ_ONLY_STARTS and first not in WRITING_STARTS:
            return False
        writing = first in WRITING_STARTS
        if writing:
            if self._in_transaction:
                return False  # inside the user's own transaction: no first pass, chunk-by-chunk calls
            self.duckdb.execute("BEGIN TRANSACTION")

        def first_pass() -> None:
            relation = self.duckdb.sql(text, params=parameters) if parameters else self.duckdb.sql(text)
            if relation is not None:
                reader = relation.to_arrow_reader() if hasattr(relation, "to_arrow_reader") else None
                if reader is None:
                    relation.to_arrow_table()
                else:
                    for _ in reader:
                        pass

        # the service's instances compute while this pass scans: leave them half the cores
        try:
            with self._duckdb_threads(max(1, user_threads // 2), user_threads):
                return self.functions.prefetch(first_pass)
        finally:
            if writing:
                self.duckdb.execute("ROLLBACK")

    def _remember(self, query_id: str, table: pa.Table | None) -> None:
        self._query_ids.append(query_id)
        if table is None:
            return
        name = "__duckserve_result_" + query_id.replace("-", "")
        self.duckdb.register(name, table)
        self._results[query_id] = name
        while len(self._results) > RESULT_HISTORY:
            _, old = self._results.popitem(last=False)
            self.duckdb.unregister(old)

    def last_query_id(self, n: int = -1) -> str:
        try:
            return self._query_ids[n if n < 0 else n - 1]
        except IndexError:
            raise errors.ProgrammingError(
                f"LAST_QUERY_ID({n}): this session has run {len(self._query_ids)} queries"
            ) from None


class _RewriteContext:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def materialize(self, statement: splitter.Statement) -> str | None:
        if parser.parse(statement) is None:
            return None
        result = self.connection.run_statement(statement)
        return self.connection._results[result.query_id]

    def result_relation(self, reference: str | int) -> str:
        query_id = self.connection.last_query_id(reference) if isinstance(reference, int) else reference
        name = self.connection._results.get(query_id)
        if name is None:
            raise errors.ProgrammingError(
                f"RESULT_SCAN: no result for query {query_id} in this session (only the last {RESULT_HISTORY} "
                "results with rows are kept)"
            )
        return name


class Cursor:
    """PEP 249 cursor; results are materialized as Arrow tables."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self._result: Result | None = None
        self._position = 0
        self._rows: list[tuple[Any, ...]] | None = None
        self._closed = False

    # -- PEP 249 attributes -----------------------------------------------------------------------
    @property
    def description(self) -> list[tuple[Any, ...]] | None:
        if self._result is None or self._result.table is None:
            return None
        return [(f.name, str(f.type), None, None, None, None, None) for f in self._result.table.schema]

    @property
    def rowcount(self) -> int:
        return self._result.rowcount if self._result is not None else -1

    @property
    def sfqid(self) -> str | None:
        """The last statement's query id (as Snowflake's connector names it)."""
        return self._result.query_id if self._result is not None else None

    query_id = sfqid

    @property
    def rownumber(self) -> int | None:
        return self._position if self._result is not None else None

    # -- execution --------------------------------------------------------------------------------
    def execute(self, operation: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> Cursor:
        self._check_open()
        results = self.connection.run(operation, parameters)
        self._set(results[-1] if results else None)
        return self

    def executemany(self, operation: str, seq_of_parameters: Sequence[Sequence[Any] | dict[str, Any]]) -> Cursor:
        self._check_open()
        total = 0
        last: Result | None = None
        for parameters in seq_of_parameters:
            for last in self.connection.run(operation, parameters):
                total += max(last.rowcount, 0)
        if last is not None:
            last.rowcount = total
        self._set(last)
        return self

    def _set(self, result: Result | None) -> None:
        self._result = result
        self._position = 0
        self._rows = None

    def _all_rows(self) -> list[tuple[Any, ...]]:
        if self._result is None:
            raise errors.InterfaceError("no statement has been executed on this cursor: call execute() first")
        if self._result.table is None:
            raise errors.InterfaceError(f"the last statement returned no rows: {self._result.sql[:60]}")
        if self._rows is None:
            columns = [c.to_pylist() for c in self._result.table.columns]
            self._rows = list(zip(*columns)) if columns else []
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        self._check_open()
        rows = self._all_rows()
        if self._position >= len(rows):
            return None
        self._position += 1
        return rows[self._position - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._check_open()
        rows = self._all_rows()
        size = self.arraysize if size is None else size
        chunk = rows[self._position:self._position + size]
        self._position += len(chunk)
        return chunk

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._check_open()
        rows = self._all_rows()
        chunk = rows[self._position:]
        self._position = len(rows)
        return chunk

    def fetch_arrow_table(self) -> pa.Table:
        self._check_open()
        self._all_rows()
        assert self._result is not None and self._result.table is not None
        return self._result.table.slice(self._position)

    def fetch_pandas_all(self) -> pd.DataFrame:
        return self.fetch_arrow_table().to_pandas()

    fetchdf = fetch_pandas_all

    def setinputsizes(self, sizes: Any) -> None:
        """PEP 249: accepted and ignored."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """PEP 249: accepted and ignored."""

    def close(self) -> None:
        self._closed = True
        self._result = None
        self._rows = None

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
        self.close()
