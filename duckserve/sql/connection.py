"""The PEP 249 connection: DuckDB for data, the account catalog for our statements.

A script with nothing of ours in it goes to DuckDB whole, exactly as written, through DuckDB's own
``execute``: DuckDB splits it, runs it and returns its last result. A script with one of our
statements, a service-function call or ``RESULT_SCAN`` is split: ours go to the control plane,
each DuckDB statement goes to DuckDB as DuckDB would have cut it from the script (comments, spaces
and its ``;`` included), after the token rewrites of ``duckserve.sql.rewrite``. Every statement's
replacement scans see the caller's Python variables (``duckserve.sql.python_scope``).

Every statement gets a query id, so ``RESULT_SCAN(LAST_QUERY_ID())`` reads an earlier result like a
table: the result is kept by duckserve (``duckserve.sql.results``) and handed to the statement as a
Python variable of its own, never as a view or table in the user's catalog.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from duckserve import errors
from duckserve.engine.account import Account
from duckserve.engine.names import ObjectName
from duckserve.engine.results import Rows
from duckserve.sql import executor, parser, python_scope, rewrite, splitter, telemetry
from duckserve.sql.cursor import Cursor
from duckserve.sql.results import BATCH_ROWS, Buffer, DuckDBResult, KeptResult, Result
from duckserve.sql.scratch import Scratch, arrow_reader

#: how many earlier results RESULT_SCAN can reach
RESULT_HISTORY = 32

Parameters = Sequence[Any] | dict[str, Any] | None

_ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32(), "DOUBLE": pa.float64(),
                "BOOLEAN": pa.bool_(), "TIMESTAMPTZ": pa.timestamp("us", tz="UTC")}
#: DuckDB's statement results that mean "no rows" (PEP 249: description None, nothing to fetch)
_NO_ROWS_COLUMNS = (("Success", "BOOLEAN"), ("Count", "BIGINT"))


def duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type a column of our statements' results reads as."""
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP WITH TIME ZONE" if arrow_type.tz else "TIMESTAMP"
    for test, name in ((pa.types.is_boolean, "BOOLEAN"), (pa.types.is_int32, "INTEGER"), (pa.types.is_integer, "BIGINT"),
                       (pa.types.is_floating, "DOUBLE"), (pa.types.is_date, "DATE"), (pa.types.is_binary, "BLOB")):
        if test(arrow_type):
            return name
    return "VARCHAR"


def rows_to_arrow(rows: Rows) -> pa.Table:
    arrays = []
    for index, column in enumerate(rows.columns):
        values = [r[index] for r in rows.rows]
        declared = _ARROW_TYPES.get(rows.types.get(column, ""))
        if declared is None and all(v is None for v in values):
            declared = pa.string()
        arrays.append(pa.array(values, type=declared))
    return pa.Table.from_arrays(arrays, names=list(rows.columns))


_DUCKDB_TO_OURS: list[tuple[type[Exception], type[errors.Error]]] = [
    (duckdb.IntegrityError, errors.IntegrityError),
    (duckdb.DataError, errors.DataError),
    (duckdb.NotSupportedError, errors.NotSupportedError),
    (duckdb.InternalError, errors.InternalError),
    (duckdb.OperationalError, errors.OperationalError),
    (duckdb.ProgrammingError, errors.ProgrammingError),
]


def translate_duckdb_error(exc: Exception, sql: str = "") -> errors.Error:
    """DuckDB's exception as ours, in the same PEP 249 class, with DuckDB's message unchanged."""
    if isinstance(exc, errors.Error):
        return exc
    for theirs, ours in _DUCKDB_TO_OURS:
        if isinstance(exc, theirs):
            return ours(str(exc))
    return errors.DatabaseError(str(exc))


class Connection(errors.DBAPIExceptions):
    """PEP 249 connection over one DuckDB database and the account in ``home``.

    ``python_variables=False`` hides every Python variable from DuckDB's replacement scans (for
    fronts that run statements on behalf of other processes)."""

    def __init__(self, database: str = ":memory:", home: str | None = None, user: str | None = None,
                 role: str | None = None, warehouse: str | None = None, read_only: bool = False,
                 config: dict[str, Any] | None = None, python_variables: bool = True,
                 autocommit: bool = True) -> None:
        from duckserve.engine.services import Services
        from duckserve.sql.model_functions import ModelFunctions
        from duckserve.sql.service_functions import ServiceFunctions

        self.account = Account(home)
        self.services = Services(self.account)
        self.session = self.account.open_session(user, role, warehouse)
        try:
            self._duckdb = duckdb.connect(database, read_only=read_only, config=config or {})
        except duckdb.Error as exc:
            raise errors.OperationalError(f"cannot open DuckDB database {database!r}: {exc}") from exc
        self.database = database
        self.python_variables = python_variables
        self.scratch = Scratch()
        self._lock = threading.RLock()
        self._history: OrderedDict[str, Result] = OrderedDict()  # query id -> result with rows
        self._query_ids: list[str] = []
        self._live: DuckDBResult | None = None  # the result DuckDB's connection holds open
        self._closed = False
        self._autocommit = autocommit
        self._in_transaction = False  # an explicit BEGIN is open (DuckDB cannot be asked cheaply)
        self.functions = ServiceFunctions(self)
        self.model_functions = ModelFunctions(self)

    @property
    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection itself; an open result of a cursor is put aside first, so that what
        the caller runs on it does not take the rows from under the cursor."""
        self._release()
        return self._duckdb

    # -- PEP 249 ----------------------------------------------------------------------------------
    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def close(self) -> None:
        self._check_open()
        self._closed = True
        self._live = None
        self._history.clear()
        try:
            self._duckdb.close()
            self.scratch.close()
        finally:
            self.account.catalog.close()

    def commit(self) -> None:
        self._check_open()
        self._end_transaction("COMMIT")

    def rollback(self) -> None:
        self._check_open()
        self._end_transaction("ROLLBACK")

    @property
    def autocommit(self) -> bool:
        """True (the default, as in DuckDB and Snowflake's connector): each statement commits.
        False: a transaction opens before the first statement and after each commit/rollback."""
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._check_open()
        if value and not self._autocommit and self._in_transaction:
            self.commit()
        self._autocommit = bool(value)

    def _end_transaction(self, verb: str) -> None:
        with self._lock:
            self._transaction_ended(rolled_back=verb == "ROLLBACK")
            try:
                self.duckdb.execute(verb)
            except duckdb.TransactionException:
                pass  # no transaction open: PEP 249 commit/rollback are then no-ops
            except duckdb.Error as exc:
                raise translate_duckdb_error(exc, verb) from exc

    def interrupt(self) -> None:
        """Stop the running statement and its service-function calls (from another thread)."""
        self.functions.cancel()
        try:
            self._duckdb.interrupt()
        except duckdb.Error:  # a closed or idle connection has nothing to interrupt
            pass

    def execute(self, operation: str, parameters: Parameters = None) -> Cursor:
        """Shortcut: a new cursor that has executed ``operation``."""
        return self.cursor().execute(operation, parameters)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InterfaceError("the connection is closed: open a new one with duckserve.connect()")

    # -- running SQL ------------------------------------------------------------------------------
    def run(self, sql: str, parameters: Parameters = None) -> list[Result]:
        """Run every statement of a script; parameters bind to a single DuckDB statement."""
        self._check_open()
        if not isinstance(sql, str):
            raise errors.ProgrammingError(f"a statement is text, got {type(sql).__name__}")
        scope = python_scope.caller_scope() if self.python_variables else python_scope.EMPTY
        with self._lock:
            self.functions.begin()
            if not parser.may_be_ours(sql):
                return [self._run_duckdb(sql, parameters, scope)]
            try:
                statements = splitter.split(sql)
            except errors.SQLSyntaxError:
                return [self._run_duckdb(sql, parameters, scope)]  # DuckDB reads it, or says why not
            if not any(self._needs_us(s) for s in statements):
                result = self._run_duckdb(sql, parameters, scope)
                for statement in statements:
                    self._track_transaction(statement)
                return [result]
            if parameters and len(statements) > 1:
                raise errors.ProgrammingError("parameters can only be bound to a single statement; split the script")
            return [self.run_statement(s, parameters, scope) for s in statements]

    def _needs_us(self, statement: splitter.Statement) -> bool:
        from duckserve.sql.model_functions import find_model_calls
        from duckserve.sql.service_functions import find_calls

        return (parser.is_ours(statement, self._duckdb_sees) or rewrite.applies(statement)
                or telemetry.applies(statement) or bool(find_calls(statement)) or bool(find_model_calls(statement)))

    def _duckdb_sees(self, name: str) -> bool:
        """Whether DuckDB reads ``name`` as a table or view of its catalogs (or a Python variable)."""
        scope = python_scope.caller_scope() if self.python_variables else python_scope.EMPTY
        if name in scope[1] or name in scope[0]:
            return True
        try:
            found = self.duckdb.execute(
                "SELECT 1 FROM duckdb_tables() WHERE lower(table_name) = lower($1) UNION ALL "
                "SELECT 1 FROM duckdb_views() WHERE lower(view_name) = lower($1) LIMIT 1", [name.strip('"')]).fetchall()
        except duckdb.Error:  # an aborted transaction answers nothing: the statement is ours
            return False
        return bool(found)

    def run_statement(self, statement: splitter.Statement, parameters: Parameters = None,
                      scope: python_scope.Scope | None = None) -> Result:
        """Run one statement of a split script."""
        if scope is None:
            scope = python_scope.caller_scope() if self.python_variables else python_scope.EMPTY
        with self._lock:
            started = time.perf_counter()
            if parameters and parser.is_ours(statement, self._duckdb_sees):
                raise errors.ProgrammingError(
                    f"{statement.text.split()[0].upper()} statements of duckserve take no parameters: "
                    "write the values into the statement")
            ours = parser.parse(statement, self._duckdb_sees)
            if ours is not None:
                self._release()
                result: Result = self._our_result(str(uuid.uuid4()), statement.text, executor.execute(self, ours))
            else:
                self.functions.begin()
                sources: dict[str, pa.Table] = {}
                context = _RewriteContext(self, sources)
                edits: list[rewrite.Edit] = []
                rewrites: list[Callable[[splitter.Statement, Any], list[rewrite.Edit]]] = [
                    *rewrite.REWRITES, *telemetry.REWRITES, self.functions.rewrite, self.model_functions.rewrite]
                for function in rewrites:
                    edits.extend(function(statement, context))
                text = rewrite.apply(statement, edits, statement.duckdb_text, statement.span_start)
                result = self._run_duckdb(text, parameters, scope, sources, remember=False)
                self._track_transaction(statement)
            result.seconds = time.perf_counter() - started
            self._remember(result)
            return result

    def _our_result(self, query_id: str, sql: str, rows: Rows) -> Result:
        table = rows_to_arrow(rows)
        types = [duckdb_type(field.type) for field in table.schema]
        description = [(c, duckdb.sqltype(t), None, None, None, None, None) for c, t in zip(rows.columns, types)]
        buffer = Buffer(self.scratch, list(rows.columns), types, rows=[tuple(r) for r in rows.rows], table=table)
        return KeptResult(query_id, sql, description, buffer, ours=True)

    def _run_duckdb(self, text: str, parameters: Parameters, scope: python_scope.Scope,
                    sources: dict[str, pa.Table] | None = None, remember: bool = True) -> Result:
        started = time.perf_counter()
        self._release()
        if not self._autocommit and not self._in_transaction:
            self._duckdb.execute("BEGIN TRANSACTION")
            self._in_transaction = True
        query_id = str(uuid.uuid4())
        if self.functions.active:
            result = self._run_with_service_functions(query_id, text, parameters, scope, sources)
        else:
            result = self._execute(query_id, text, parameters, scope, sources)
        result.seconds = time.perf_counter() - started
        if remember:
            self._remember(result)
        return result

    def _execute(self, query_id: str, text: str, parameters: Parameters, scope: python_scope.Scope,
                 sources: dict[str, pa.Table] | None) -> Result:
        """One call of DuckDB's ``execute``; the result stays in DuckDB until a cursor reads it."""
        con = self._duckdb
        try:
            if parameters is None:
                python_scope.call(con.execute, text, scope=scope, sources=sources)
            else:
                python_scope.call(con.execute, text, parameters, scope=scope, sources=sources)
        except duckdb.Error as exc:
            raise self._translate(exc, text) from exc
        except KeyboardInterrupt:
            self.functions.cancel()
            con.interrupt()
            raise
        description, rowcount = con.description, con.rowcount
        if not description or self._returns_no_rows(text, description, rowcount):
            return Result(query_id, text, None, rowcount)
        result = DuckDBResult(query_id, text, list(description), rowcount, con, self.scratch,
                              lambda exc: self._translate(exc, text), self._lock)
        self._live = result
        return result

    def _returns_no_rows(self, text: str, description: list[tuple[Any, ...]], rowcount: int) -> bool:
        """DuckDB answers a statement without rows (DDL, SET, BEGIN, INSERT ...) with one Success or
        Count column; PEP 249 says such a statement has no result set."""
        if len(description) != 1 or (description[0][0], str(description[0][1])) not in _NO_ROWS_COLUMNS:
            return False
        if rowcount >= 0:
            return True  # INSERT, UPDATE, DELETE, COPY: the count is the rowcount
        try:
            last = self._duckdb.extract_statements(text)[-1]
        except (duckdb.Error, IndexError):
            return False
        return any(kind.name == "NOTHING" for kind in last.expected_result_type)

    def _run_with_service_functions(self, query_id: str, text: str, parameters: Parameters,
                                    scope: python_scope.Scope, sources: dict[str, pa.Table] | None) -> Result:
        """A statement that calls services runs to its end here, at the thread count its calls need
        (the session's own ``SET threads`` is put back after): its rows are read out before."""
        threads = user_threads = self._threads()
        prefetched = self._prefetch(text, parameters, scope, sources, user_threads)
        if not prefetched:
            # chunk by chunk, DuckDB calls the UDF from as many threads as the query runs on:
            # make that as many as batches may be in flight (a prefetch sends its own batches)
            threads = max(user_threads, self.functions.parallelism())
        with self._duckdb_threads(threads, user_threads):
            result = self._execute(query_id, text, parameters, scope, sources)
            try:
                result.release()
            except KeyboardInterrupt:
                self.functions.cancel()
                self._duckdb.interrupt()
                raise
            self._live = None
        return result

    def _translate(self, exc: Exception, text: str) -> errors.Error:
        if self.functions.error is not None:
            return self.functions.error
        from duckserve.sql.model_functions import explain_udf_error

        return explain_udf_error(exc, self) or translate_duckdb_error(exc, text)

    def _release(self) -> None:
        """Put the open DuckDB result aside before the connection runs anything else."""
        live, self._live = self._live, None
        if live is not None:
            live.release()

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
        return int(self._duckdb.execute("SELECT current_setting('threads')").fetchall()[0][0])

    @contextmanager
    def _duckdb_threads(self, threads: int, user_threads: int) -> Iterator[None]:
        """DuckDB runs on ``threads`` inside the block, then on the session's own ``user_threads``."""
        if threads == user_threads:
            yield
            return
        self._duckdb.execute(f"SET threads = {threads}")
        try:
            yield
        finally:
            self._duckdb.execute(f"SET threads = {user_threads}")

    def _prefetch(self, text: str, parameters: Parameters, scope: python_scope.Scope,
                  sources: dict[str, pa.Table] | None, user_threads: int) -> bool:
        """A first pass that gathers service-function arguments, so they travel in large batches
        (see ``service_functions.Prefetch``). A writing statement's first pass is rolled back.
        False when the statement is not prefetched (its calls then go chunk by chunk)."""
        from duckserve.sql.service_functions import READ_ONLY_STARTS, WRITING_STARTS

        tokens = splitter.tokenize(text)
        first = tokens[0].text.upper() if tokens else ""
        if first not in READ_ONLY_STARTS and first not in WRITING_STARTS:
            return False
        writing = first in WRITING_STARTS
        if writing:
            if self._in_transaction:
                return False  # inside the user's own transaction: no first pass, chunk-by-chunk calls
            self._duckdb.execute("BEGIN TRANSACTION")

        def first_pass() -> None:
            con = self._duckdb
            arguments = (text,) if parameters is None else (text, parameters)
            try:
                python_scope.call(con.execute, *arguments, scope=scope, sources=sources)
                if con.description:
                    reader = arrow_reader(con, BATCH_ROWS)
                    if reader is not None:
                        for _ in reader:
                            pass
                        reader.close()
            except duckdb.Error as exc:
                raise self._translate(exc, text) from exc

        # the service's instances compute while this pass scans: leave them half the cores
        try:
            with self._duckdb_threads(max(1, user_threads // 2), user_threads):
                return self.functions.prefetch(first_pass)
        finally:
            if writing:
                self._duckdb.execute("ROLLBACK")

    # -- results kept for RESULT_SCAN -------------------------------------------------------------
    def _remember(self, result: Result) -> None:
        if result.query_id in self._history or (self._query_ids and self._query_ids[-1] == result.query_id):
            return
        self._query_ids.append(result.query_id)
        if not result.has_rows:
            return
        self._history[result.query_id] = result
        while len(self._history) > RESULT_HISTORY:
            self._history.popitem(last=False)

    def last_query_id(self, n: int = -1) -> str:
        try:
            return self._query_ids[n if n < 0 else n - 1]
        except IndexError:
            raise errors.ProgrammingError(
                f"LAST_QUERY_ID({n}): this session has run {len(self._query_ids)} queries"
            ) from None

    def kept_result(self, query_id: str) -> pa.Table:
        result = self._history.get(query_id)
        if result is None:
            raise errors.ProgrammingError(
                f"RESULT_SCAN: no result for query {query_id} in this session (only the last {RESULT_HISTORY} "
                "results with rows are kept)"
            )
        return result.kept_table()


class _RewriteContext:
    """What the rewrites ask of the connection; the tables they hand the statement go to ``sources``."""

    def __init__(self, connection: Connection, sources: dict[str, pa.Table]) -> None:
        self.connection = connection
        self.sources = sources

    def _source(self, table: pa.Table) -> str:
        name = f"__duckserve_result_{len(self.sources)}_{uuid.uuid4().hex[:8]}"
        self.sources[name] = table
        return name

    def materialize(self, statement: splitter.Statement) -> str | None:
        if parser.parse(statement, self.connection._duckdb_sees) is None:
            return None
        result = self.connection.run_statement(statement)
        return self._source(result.kept_table())

    def service_telemetry(self, name: ObjectName, function: str, start: datetime | None,
                          end: datetime | None) -> str:
        from duckserve.engine.services.service_telemetry import service_table

        connection = self.connection
        service = connection.services.get(connection.session, name)
        assert service is not None
        return self._source(service_table(connection.services, connection.session, service, function, start, end))

    def event_table(self, service_name: str | None = None, start: datetime | None = None) -> str:
        from duckserve.engine.services.service_telemetry import account_events

        return self._source(account_events(self.connection.services, self.connection.session, service_name, start))

    def timestamp(self, expression: str) -> datetime:
        with duckdb.connect() as scratch:  # a constant: nothing of the session is needed
            try:
                row = scratch.execute(f"SELECT CAST(({expression}) AS TIMESTAMPTZ)").fetchone()
            except duckdb.Error as exc:
                raise errors.ProgrammingError(f"not a timestamp: {expression}: {exc}") from exc
        if row is None or not isinstance(row[0], datetime):
            raise errors.ProgrammingError(f"not a timestamp: {expression}")
        return row[0]

    def result_relation(self, reference: str | int) -> str:
        connection = self.connection
        query_id = connection.last_query_id(reference) if isinstance(reference, int) else reference
        connection._release()
        return self._source(connection.kept_result(query_id))
