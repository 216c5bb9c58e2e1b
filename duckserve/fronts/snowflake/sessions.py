"""Sessions of the Snowflake-protocol server and the queries they run.

A login opens an ordinary duckserve connection (``duckserve.connect``) as the authenticated user
and role, on the server's DuckDB database; every statement runs through it, so grants, errors and
results are those of a local connection. Queries run on worker threads: a client waits for a short
query's answer, polls for a long one (Snowflake's "query in progress"), and may cancel it.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from duckserve import errors
from duckserve.engine.account import Account
from duckserve.fronts.snowflake import protocol
from duckserve.fronts.snowflake.auth import Identity, LoginRefused, still_valid
from duckserve.fronts.snowflake.results import ResultSet

#: how many finished results a session keeps for chunk downloads and result URLs
KEPT_RESULTS = 16
#: how often a session's credential is checked again (a removed token ends its sessions)
RECHECK_SECONDS = 1.0


class QueryCanceled(errors.OperationalError):
    """The query was canceled by its client (abort-request, SYSTEM$CANCEL_QUERY or a timeout)."""


@dataclass
class Query:
    """One statement sent by a client: running, then answered with a result or an error."""

    query_id: str
    request_id: str | None
    sql: str
    future: Future[None] = field(default_factory=Future)
    result: ResultSet | None = None
    statement_type: int = protocol.SELECT
    rowcount: int | None = None
    canceled: bool = False
    timed_out: float | None = None
    started: float = field(default_factory=time.time)
    chunk_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def done(self) -> bool:
        return self.future.done()

    @property
    def status(self) -> str:
        if not self.done:
            return "RUNNING"
        if self.canceled:
            return "ABORTED"
        return "FAILED_WITH_ERROR" if self.future.exception() is not None else "SUCCESS"


class ServerSession:
    """A logged-in client: its duckserve connection and its queries."""

    def __init__(self, server: Server, identity: Identity, connection: Any) -> None:
        self.server = server
        self.identity = identity
        self.connection = connection
        self.token = secrets.token_urlsafe(32)
        self.master_token = secrets.token_urlsafe(32)
        self.session_id = int.from_bytes(secrets.token_bytes(6), "big")
        self.queries: dict[str, Query] = {}
        self.by_request: dict[str, Query] = {}
        self.lock = threading.Lock()
        self.checked = time.monotonic()
        self.parameters: dict[str, Any] = {}
        self.in_transaction = False

    # -- the credential -------------------------------------------------------------------------
    def check(self) -> None:
        """The credential still authenticates (at most once a second)."""
        moment = time.monotonic()
        if moment - self.checked < RECHECK_SECONDS:
            return
        still_valid(self.server.account, self.identity)
        self.checked = moment

    # -- queries ----------------------------------------------------------------------------------
    def submit(self, sql: str, parameters: Any, rows: list[list[Any]] | None, request_id: str | None,
               describe_only: bool = False, timeout: float | None = None) -> Query:
        query = Query(str(uuid.uuid4()), request_id, sql, statement_type=protocol.statement_type(sql))
        with self.lock:
            self.queries[query.query_id] = query
            if request_id:
                self.by_request[request_id] = query
            self._forget_old()

        def run() -> None:
            if not query.future.set_running_or_notify_cancel():
                return
            try:
                self._execute(query, parameters, rows, describe_only)
                query.future.set_result(None)
            except BaseException as exc:  # noqa: B036 - handed to the waiting request, never lost
                query.future.set_exception(_canceled(query) if query.canceled else exc)
            finally:
                if timer is not None:
                    timer.cancel()

        timer = None
        if timeout and timeout > 0:
            def expire() -> None:
                query.timed_out = timeout
                if not self.cancel(query):
                    query.timed_out = None

            timer = threading.Timer(timeout, expire)
            timer.daemon = True
            timer.start()
        self.server.pool.submit(run)
        return query

    def _execute(self, query: Query, parameters: Any, rows: list[list[Any]] | None, describe_only: bool) -> None:
        from duckserve.fronts.snowflake import compat
        from duckserve.fronts.snowflake.bindings import to_duckdb

        sql = compat.translate(query.sql) or to_duckdb(query.sql, numeric=bool(parameters or rows))
        if describe_only:
            described = _describe_form(sql, query.statement_type)
            if described is None:
                return
            sql = described
        connection = self.connection
        session_answer = self._session_statement(sql)
        if session_answer is not None:
            query.result = ResultSet(pa.table({"status": pa.array([session_answer])}))
            return
        self._begin_if_not_autocommit(query.statement_type)
        if rows is not None:
            total = 0
            for row in rows:
                if query.canceled:
                    raise _canceled(query)
                for result in connection.run(sql, row):
                    total += max(result.rowcount, 0)
            query.rowcount = total
            query.result = ResultSet(pa.table({protocol.DML_COLUMNS.get(query.statement_type, "count"):
                                               pa.array([total], pa.int64())}))
            return
        results = connection.run(sql, parameters)
        last = results[-1] if results else None
        if last is not None and query.statement_type in protocol.DML_COLUMNS and not last.ours \
                and not last.has_rows:  # INSERT/UPDATE/DELETE: no result set, the count is the rowcount
            count = int(last.rowcount) if last.rowcount >= 0 else 0
            query.rowcount = count
            query.result = ResultSet(pa.table({protocol.DML_COLUMNS[query.statement_type]:
                                               pa.array([count], pa.int64())}))
            return
        if last is None or not last.has_rows:
            query.result = None
            return
        query.result = ResultSet(last.arrow_table())

    def _session_statement(self, sql: str) -> str | None:
        """Snowflake's session statements, answered here: ALTER SESSION SET/UNSET, and COMMIT and
        ROLLBACK, which Snowflake (unlike DuckDB) accepts when no transaction is open."""
        words = sql.strip().rstrip(";").split()
        upper = [w.upper() for w in words]
        if upper in (["COMMIT"], ["COMMIT", "WORK"], ["ROLLBACK"], ["ROLLBACK", "WORK"]):
            if upper[0] == "COMMIT":
                self.connection.commit()
            else:
                self.connection.rollback()
            self.in_transaction = False
            return "Statement executed successfully."
        if upper[:2] == ["ALTER", "SESSION"] and len(upper) > 2:
            self.parameters.update(parse_session_settings(sql, upper[2]))
            return "Statement executed successfully."
        return None

    def _begin_if_not_autocommit(self, statement_type: int) -> None:
        """With AUTOCOMMIT off, a writing statement opens a transaction that lasts until COMMIT or
        ROLLBACK (reads run on their own, so service functions keep their batched first pass)."""
        if statement_type == protocol.TRANSACTION:
            self.in_transaction = not self.in_transaction
            return
        if self.in_transaction or _truthy(self.parameters.get("AUTOCOMMIT", True)):
            return
        if statement_type in (protocol.SELECT, protocol.SHOW, protocol.DESCRIBE, protocol.USE, protocol.ALTER_SESSION,
                              0x2000):
            return
        self.connection.run("BEGIN TRANSACTION")
        self.in_transaction = True

    def _forget_old(self) -> None:
        finished = [q for q in self.queries.values() if q.done]
        for old in finished[:-KEPT_RESULTS] if len(finished) > KEPT_RESULTS else []:
            self.queries.pop(old.query_id, None)
            if old.request_id:
                self.by_request.pop(old.request_id, None)

    def query(self, query_id: str) -> Query | None:
        with self.lock:
            return self.queries.get(query_id)

    def cancel(self, query: Query) -> bool:
        """Stop a running query: its batches in flight and DuckDB's execution."""
        if query.done:
            return False
        query.canceled = True
        if query.future.cancel():   # not started yet
            return True
        self.connection.interrupt()  # from another thread: the service calls and DuckDB's execution
        return True

    def close(self) -> None:
        with self.lock:
            running = [q for q in self.queries.values() if not q.done]
        for query in running:
            self.cancel(query)
        for query in running:
            try:
                query.future.exception(timeout=10)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        try:
            self.connection.close()
        except errors.Error:
            pass


def _truthy(value: Any) -> bool:
    return str(value).strip().upper() not in ("FALSE", "0", "OFF", "NO", "F", "N")


def parse_session_settings(sql: str, verb: str) -> dict[str, Any]:
    """``ALTER SESSION SET a = 1, b = 'x'`` -> {A: 1, B: 'x'}; UNSET a, b -> {A: None, B: None}."""
    body = sql.strip().rstrip(";").split(None, 3)[3] if len(sql.split()) > 3 else ""
    settings: dict[str, Any] = {}
    if verb == "UNSET":
        return {name.strip().upper(): None for name in body.split(",") if name.strip()}
    if verb != "SET":
        raise errors.ProgrammingError(f"ALTER SESSION {verb}: write ALTER SESSION SET name = value or UNSET name")
    import re

    for match in re.finditer(r"(\w+)\s*=\s*('(?:[^']|'')*'|[^\s,]+)", body):
        value = match.group(2)
        settings[match.group(1).upper()] = value[1:-1].replace("''", "'") if value.startswith("'") else value
    if not settings:
        raise errors.ProgrammingError("ALTER SESSION SET needs name = value pairs")
    return settings


def _canceled(query: Query) -> QueryCanceled:
    if query.timed_out:
        return QueryCanceled(f"Statement reached its statement or warehouse timeout of {query.timed_out:g} second(s) "
                             "and was canceled (STATEMENT_TIMEOUT_IN_SECONDS).")
    return QueryCanceled("SQL execution canceled")


def _describe_form(sql: str, statement_type: int) -> str | None:
    """What runs for a describe-only request: a query limited to no rows; nothing for the rest."""
    if statement_type != protocol.SELECT:
        return None
    body = sql.strip().rstrip(";")
    return f"SELECT * FROM ({body}) AS described LIMIT 0"


class Server:
    """The server's account, database and sessions."""

    def __init__(self, database: str, home: str | None, workers: int = 32) -> None:
        self.account = Account(home)
        self.home = str(self.account.home)
        # every session of an in-memory server sees the same database: a named in-memory one
        self.database = f":memory:duckserve_server_{uuid.uuid4().hex}" if database == ":memory:" else database
        self.sessions: dict[str, ServerSession] = {}
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="duckserve-query")
        self._lock = threading.Lock()
        self._keeper = None
        if self.database.startswith(":memory:"):
            import duckdb

            self._keeper = duckdb.connect(self.database)   # keeps the shared database alive between sessions

    def open(self, identity: Identity, role: str | None, warehouse: str | None, database: str | None,
             schema: str | None) -> ServerSession:
        import duckserve

        wanted = role or identity.role_restriction or identity.default_role
        if identity.role_restriction and role and role.upper() != identity.role_restriction.upper():
            raise LoginRefused(
                f"Role '{role}' specified in the connect string is not granted to this user: the token is "
                f"restricted to role {identity.role_restriction}", "390189")
        try:
            connection = duckserve.connect(self.database, home=self.home, user=identity.user, role=wanted,
                                           warehouse=warehouse, python_variables=False)
        except errors.InsufficientPrivileges as exc:
            raise LoginRefused(f"Role '{wanted}' specified in the connect string is not granted to this user: "
                               f"{exc}", "390189") from exc
        except errors.ObjectNotFound as exc:
            raise LoginRefused(str(exc), "390201") from exc
        connection.session.role_restriction = identity.role_restriction
        try:
            if database:
                connection.run(f"USE DATABASE {_identifier(database)}")
            if schema:
                connection.run(f"USE SCHEMA {_identifier(schema)}")
        except errors.Error as exc:
            connection.close()
            raise LoginRefused(f"the database or schema of the connect string cannot be used: {exc}",
                               "390201") from exc
        session = ServerSession(self, identity, connection)
        with self._lock:
            self.sessions[session.token] = session
        return session

    def session(self, token: str | None) -> ServerSession | None:
        if not token:
            return None
        with self._lock:
            return self.sessions.get(token)

    def renew(self, master_token: str) -> ServerSession | None:
        with self._lock:
            for session in self.sessions.values():
                if secrets.compare_digest(session.master_token, master_token):
                    self.sessions.pop(session.token, None)
                    session.token = secrets.token_urlsafe(32)
                    self.sessions[session.token] = session
                    return session
        return None

    def close_session(self, token: str) -> bool:
        with self._lock:
            session = self.sessions.pop(token, None)
        if session is None:
            return False
        session.close()
        return True

    def close(self) -> None:
        with self._lock:
            sessions = list(self.sessions.values())
            self.sessions.clear()
        for session in sessions:
            session.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._keeper is not None:
            self._keeper.close()
        self.account.catalog.close()


def _identifier(name: str) -> str:
    if name.startswith('"') or name.replace("_", "").replace("$", "").isalnum():
        return name
    return '"' + name.replace('"', '""') + '"'
