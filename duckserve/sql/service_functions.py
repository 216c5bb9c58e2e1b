"""``service!method(args)`` in SQL: rewritten at token level into a vectorized DuckDB UDF bound to
that service and method, which sends the rows through ``duckserve.engine.client``.

The rewrite touches only ``name!method(``: the arguments, and everything else in the statement,
stay exactly as written, so the call works wherever an expression may stand.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot.tokens import Token, TokenType

from duckserve.engine.account import display_key
from duckserve.engine.client import ServiceClient, single_array
from duckserve.engine.names import ObjectName
from duckserve.errors import Error, ObjectNotFound, ProgrammingError
from duckserve.sql.rewrite import Edit, is_name_token, matching_paren, name_before
from duckserve.sql.splitter import Statement
from duckserve.sql.telemetry import is_telemetry_method
from duckserve.sql.udfs import UdfRegistry

if TYPE_CHECKING:
    from duckserve.sql.connection import Connection

UDF_PREFIX = "__duckserve_fn_"
_NAME_TYPES = (TokenType.VAR, TokenType.IDENTIFIER)


@dataclass
class CallSite:
    start: int  # offset of the service name
    paren: int  # index of the '(' token
    name: ObjectName
    method: str
    arguments: int


def find_calls(statement: Statement) -> list[CallSite]:
    """Every ``[db.][schema.]service!method(`` in the statement."""
    tokens, calls = statement.tokens, []
    for i, token in enumerate(tokens):
        if token.token_type != TokenType.NOT or token.text != "!" or i == 0 or i + 2 >= len(tokens):
            continue
        method_token, paren = tokens[i + 1], tokens[i + 2]
        if paren.token_type != TokenType.L_PAREN or not is_name_token(method_token):
            continue
        if is_telemetry_method(method_token.text):
            continue  # svc!SPCS_GET_METRICS(...) is a table function (duckserve.sql.telemetry)
        if tokens[i - 1].token_type == TokenType.R_PAREN:
            continue  # MODEL(m, v)!method(...) is the warehouse path, not a service
        found = name_before(tokens, i)
        if found is None:
            continue
        first, name = found
        close = matching_paren(tokens, i + 2)
        calls.append(CallSite(tokens[first].start, i + 2, name,
                              method_token.text, _count_arguments(tokens, i + 2, close)))
    return calls


def _count_arguments(tokens: list[Token], open_index: int, close_index: int) -> int:
    if close_index == open_index + 1:
        return 0
    depth, count = 0, 1
    for token in tokens[open_index + 1:close_index]:
        if token.token_type in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
        elif token.token_type in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
        elif token.token_type == TokenType.COMMA and depth == 0:
            count += 1
    return count


#: statements whose first pass needs no rollback (they only read)
READ_ONLY_STARTS = ("SELECT", "WITH", "FROM", "VALUES", "TABLE", "(")
#: statements whose first pass runs inside a transaction that is rolled back
WRITING_STARTS = ("INSERT", "CREATE", "UPDATE", "DELETE", "MERGE")
#: the most argument rows a first pass gathers before giving up on prefetching (memory bound)
PREFETCH_MAX_ROWS = 20_000_000


class PrefetchAbort(Exception):
    """Raised inside the first pass when it gathers too many rows; the statement then runs direct."""


class Prefetch:
    """Large batches for a vectorized UDF that DuckDB feeds 2,048 rows at a time.

    The statement runs twice. In the first pass the UDF only gathers its argument chunks (and
    answers NULL); as soon as a batch's worth of rows (the client's ``batch_rows``) is gathered it
    goes to the service in the background, so the service computes while DuckDB is still scanning,
    with as many batches in flight as the warehouse allows. In the second pass each chunk that
    arrives again, with identical arguments, gets its precomputed answers. A chunk the first pass
    did not see (another thread order, random(), a branch that NULLs changed) is sent on the spot,
    so answers are always those of its own arguments.
    """

    def __init__(self, client: ServiceClient) -> None:
        self.client = client
        self.result_type = client._result_type()
        self.chunks: list[list[pa.Array]] = []
        self.rows = 0
        self.results: list[pa.Array] = []
        self.index: dict[tuple[Any, ...], list[int]] = {}
        self.lock = threading.Lock()
        self._pending: list[int] = []  # gathered chunks not yet sent
        self._pending_rows = 0
        self._batches: list[Future[pa.Array]] = []
        self._placement: list[tuple[int, int]] = []  # per chunk: (batch, offset in the batch)
        self._failed: BaseException | None = None
        self._next = 0  # the chunk the second pass most likely asks for next
        self._nulls: dict[int, pa.Array] = {}  # the first pass's answers, by chunk length
        self._executor = ThreadPoolExecutor(max_workers=client.parallelism, thread_name_prefix="duckserve-batch")

    @staticmethod
    def _columns(arguments: tuple[Any, ...]) -> list[pa.Array]:
        return [single_array(a) for a in arguments]

    @staticmethod
    def _key(columns: list[pa.Array]) -> tuple[Any, ...]:
        first = columns[0] if columns else None
        if first is None or len(first) == 0:
            return (0,)
        # repr: vector arguments (LIST values) are lists, which do not hash
        return (len(first), repr(first[0].as_py()), repr(first[len(first) - 1].as_py()))

    def collect(self, arguments: tuple[Any, ...]) -> pa.Array:
        columns = self._columns(arguments)
        n = len(columns[0]) if columns else 0
        with self.lock:
            if self._failed is not None:
                raise self._failed  # a batch already failed: stop the first pass now
            if self._pending_rows and self._pending_rows + n > self.client.batch_rows:
                self._send_pending()
            self._pending.append(len(self.chunks))
            self.chunks.append(columns)
            self._pending_rows += n
            self.rows += n
            if self.rows > PREFETCH_MAX_ROWS:
                raise PrefetchAbort(f"more than {PREFETCH_MAX_ROWS} rows")
            if self._pending_rows >= self.client.batch_rows:
                self._send_pending()
        nulls = self._nulls.get(n)
        if nulls is None:
            nulls = self._nulls[n] = pa.nulls(n, type=self.result_type)
        return nulls

    def _send_pending(self) -> None:
        """Send the gathered chunks as one batch in the background (called under the lock)."""
        positions, self._pending, self._pending_rows = self._pending, [], 0
        if not positions:
            return
        width = len(self.chunks[positions[0]])
        # chunked, not concatenated: the batch is written from the gathered chunks as they are
        columns = [pa.chunked_array([self.chunks[p][i] for p in positions], type=self.chunks[positions[0]][i].type)
                   for i in range(width)]
        batch, offset = len(self._batches), 0
        for p in positions:
            self._placement.append((batch, offset))
            offset += len(self.chunks[p][0]) if width else 0
        future = self._executor.submit(self.client.call, columns)
        future.add_done_callback(self._note_failure)
        self._batches.append(future)

    def _note_failure(self, future: Future[pa.Array]) -> None:
        if not future.cancelled() and future.exception() is not None and self._failed is None:
            self._failed = future.exception()

    def compute(self) -> None:
        """Send what is left and wait for every batch; then index the answers by chunk."""
        try:
            with self.lock:
                self._send_pending()
            answers = [future.result() for future in self._batches]
        finally:
            self.close()
        for position, chunk in enumerate(self.chunks):
            batch, offset = self._placement[position]
            self.results.append(answers[batch].slice(offset, len(chunk[0]) if chunk else 0))
            self.index.setdefault(self._key(chunk), []).append(position)

    def close(self) -> None:
        """Stop sending: batches not yet started are dropped, running ones finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def answer(self, arguments: tuple[Any, ...]) -> pa.Array:
        columns = self._columns(arguments)
        # chunks mostly come back in the first pass's order: try the one after the last match first
        guess = self._next
        if guess < len(self.chunks) and self._same(columns, guess):
            self._next = guess + 1  # a hint only: a race between threads costs a lookup
            return self.results[guess]
        for position in self.index.get(self._key(columns), ()):
            if self._same(columns, position):
                self._next = position + 1
                return self.results[position]
        return self.client.call(columns)

    def _same(self, columns: list[pa.Array], position: int) -> bool:
        chunk = self.chunks[position]
        return len(chunk) == len(columns) and all(a.equals(b) for a, b in zip(columns, chunk))


class ServiceFunctions:
    """The service-function UDFs of one connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.udfs = UdfRegistry(connection, UDF_PREFIX)
        self._clients: dict[str, ServiceClient] = {}
        self.error: Error | None = None  # the exception a UDF raised, re-raised after DuckDB's wrapper
        self.active: list[ServiceClient] = []
        self._prefetch: dict[str, Prefetch] = {}
        self._collecting = False

    def rewrite(self, statement: Statement, _context: Any) -> list[Edit]:
        edits = []
        for call in find_calls(statement):
            udf = self.bind(call)
            edits.append(Edit(call.start, statement.tokens[call.paren].start, udf))
        return edits

    def bind(self, call: CallSite) -> str:
        connection = self.connection
        session, services = connection.session, connection.services
        service = services.get(session, call.name)
        assert service is not None
        label = display_key(service)
        manifest = services.models.manifest(services.model_of(service), service.props["version"])
        try:
            method = manifest.method(call.method)
        except KeyError:
            names = ", ".join(f"{label}!{m.name.upper()}" for m in manifest.methods)
            raise ObjectNotFound(f"service {label} has no function {call.method.upper()}: it has {names}") from None
        if call.arguments != len(method.inputs):
            raise ProgrammingError(
                f"{label}!{method.name.upper()} takes {len(method.inputs)} argument(s) "
                f"({method.sql_arguments}), got {call.arguments}"
            )
        client = services.client(session, service, method)
        with self.udfs.lock:
            udf = self.udfs.name(f"{service.key}!{method.name}")
            self.udfs.ensure(udf, method, lambda arguments: self._call(udf, arguments))
            self._clients[udf] = client
            self.active.append(client)
        return udf

    def _call(self, udf: str, arguments: tuple[Any, ...]) -> Any:
        try:
            prefetch = self._prefetch.get(udf)
            if prefetch is None:
                return self._clients[udf].call(list(arguments))
            if self._collecting:
                return prefetch.collect(arguments)
            return prefetch.answer(arguments)
        except Error as exc:
            self.error = exc
            raise

    def begin(self) -> None:
        self.error = None
        self.active = []
        self._prefetch = {}
        self._collecting = False

    def prefetch(self, run_first_pass: Any) -> bool:
        """Run the statement's first pass (``run_first_pass()``), which gathers the arguments and
        sends them in large batches as it goes; wait for the answers. The caller then runs the
        statement for real. False when it gathered too many rows to hold (then nothing is prefetched)."""
        self._prefetch = {udf: Prefetch(client) for udf, client in self._clients.items() if client in self.active}
        self._collecting = True
        try:
            run_first_pass()
        except BaseException:
            for prefetch in self._prefetch.values():
                prefetch.close()
            if any(p.rows > PREFETCH_MAX_ROWS for p in self._prefetch.values()):
                self._prefetch = {}  # too large to gather: the statement runs chunk by chunk
                return False
            raise
        finally:
            self._collecting = False
        for prefetch in self._prefetch.values():
            prefetch.compute()
        return True

    def cancel(self) -> None:
        for client in self.active:
            client.cancelled.set()

    def parallelism(self) -> int:
        return max((c.parallelism for c in self.active), default=0)
