"""The Snowflake-protocol server: the REST endpoints Snowflake's drivers call, as a Starlette app.

    POST /session/v1/login-request       log in (programmatic access token, key-pair JWT)
    POST /session/token-request          renew the session token with the master token
    POST /session/heartbeat              keep the session alive
    POST /session?delete=true            log out
    POST /queries/v1/query-request       run a statement (bindings, describe-only, async)
    GET  /queries/{id}/result            the answer of a statement still running when first asked
    GET  /queries/{id}/chunks/{n}        the n-th chunk of a large result (Arrow IPC)
    POST /queries/v1/abort-request       cancel a statement by its request id
    GET  /monitoring/queries/{id}        a statement's status
    POST /telemetry/send                 accepted and dropped

Every statement runs through the session's duckserve connection; this module only translates.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from duckserve import errors
from duckserve.engine.tokens import parse_authorization
from duckserve.fronts.snowflake import protocol
from duckserve.fronts.snowflake.auth import LoginRefused, by_jwt, by_token
from duckserve.fronts.snowflake.bindings import from_bindings
from duckserve.fronts.snowflake.sessions import Query, QueryCanceled, Server, ServerSession

log = logging.getLogger("duckserve.fronts.snowflake")

#: how long a query request waits for its statement before answering "in progress"
WAIT_SECONDS = 30.0
SESSION_VALIDITY_SECONDS = 3600
MASTER_VALIDITY_SECONDS = 14400

_CANCEL_QUERY = re.compile(r"^\s*select\s+system\$cancel_query\s*\(\s*'([^']+)'\s*\)\s*;?\s*$", re.IGNORECASE)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip" or raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise errors.ProgrammingError(f"the request body is not JSON: {exc}") from exc
    return body if isinstance(body, dict) else {}


def _answer(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _server(request: Request) -> Server:
    server: Server = request.app.state.server
    return server


def _session(request: Request) -> ServerSession | JSONResponse:
    header = request.headers.get("authorization", "")
    token = parse_authorization(header)
    if token is None:
        return _answer(protocol.failure("Authorization header not found in the request data.",
                                        protocol.NO_AUTHORIZATION), 401)
    session = _server(request).session(token)
    if session is None:
        return _answer(protocol.failure("User must login again to access the service: the session does not "
                                        "exist (it was closed, expired, or the server restarted)",
                                        protocol.SESSION_GONE), 401)
    try:
        session.check()
    except LoginRefused as exc:
        _server(request).close_session(session.token)
        # 200, as Snowflake answers a session it ended: a 401 makes drivers try to renew the session
        return _answer(protocol.failure(f"User must login again to access the service: {exc}", exc.code))
    return session


Handler = Callable[[Request, ServerSession], Awaitable[Response]]


def _logged_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A route for a logged-in session: ``handler(request, session)``, or the answer that the request
    has no live session (as `_session` gives it)."""
    @functools.wraps(handler)
    async def route(request: Request) -> Response:
        found = _session(request)
        if isinstance(found, JSONResponse):
            return found
        return await handler(request, found)
    return route


# -- sessions ---------------------------------------------------------------------------------------
async def login(request: Request) -> JSONResponse:
    server = _server(request)
    body = await _json_body(request)
    data = body.get("data") or {}
    params = request.query_params
    login_name = str(data.get("LOGIN_NAME") or "")
    authenticator = str(data.get("AUTHENTICATOR") or "SNOWFLAKE").upper()
    try:
        identity = await run_in_threadpool(_authenticate, server, authenticator, login_name, data)
        session = await run_in_threadpool(server.open, identity, params.get("roleName") or None,
                                          params.get("warehouse") or None, params.get("databaseName") or None,
                                          params.get("schemaName") or None)
    except LoginRefused as exc:
        log.info("login refused for %s (%s): %s", login_name, authenticator, exc)
        return _answer(protocol.failure(str(exc), exc.code, "28000"))
    parameters = data.get("SESSION_PARAMETERS") or {}
    session.parameters.update({str(k).upper(): v for k, v in parameters.items()})
    log.info("login: user %s role %s (%s)", session.identity.user, session.connection.session.role, authenticator)
    return _answer(protocol.success({
        "token": session.token, "masterToken": session.master_token,
        "validityInSeconds": SESSION_VALIDITY_SECONDS, "masterValidityInSeconds": MASTER_VALIDITY_SECONDS,
        "sessionId": session.session_id, "serverVersion": protocol.SERVER_VERSION, "displayUserName": session.identity.user,
        "firstLogin": False, "remMeToken": None, "remMeValidityInSeconds": 0, "healthCheckInterval": 45,
        "newClientForUpgrade": None, "idToken": None, "idTokenValidityInSeconds": 0, "responseData": None,
        "mfaToken": None, "mfaTokenValidityInSeconds": 0,
        "sessionInfo": _session_info(session),
        "parameters": _parameters(session),
    }))


def _authenticate(server: Server, authenticator: str, login_name: str, data: dict[str, Any]) -> Any:
    if authenticator == "PROGRAMMATIC_ACCESS_TOKEN":
        return by_token(server.account, login_name, str(data.get("TOKEN") or ""))
    if authenticator == "SNOWFLAKE_JWT":
        return by_jwt(server.account, login_name, str(data.get("TOKEN") or ""))
    if authenticator in ("SNOWFLAKE", "USERNAME_PASSWORD_MFA") and data.get("PASSWORD"):
        # Snowflake accepts a programmatic access token where a password goes (JDBC tools, BI tools)
        return by_token(server.account, login_name, str(data.get("PASSWORD")))
    raise LoginRefused(
        f"Incorrect username or password was specified: duckserve's server accepts programmatic access tokens "
        f"(authenticator='PROGRAMMATIC_ACCESS_TOKEN', token=..., or the token as the password) and key-pair "
        f"JWTs (authenticator='SNOWFLAKE_JWT'), not {authenticator}")


def _session_info(session: ServerSession) -> dict[str, Any]:
    s = session.connection.session
    return {"databaseName": s.database, "schemaName": s.schema, "warehouseName": s.warehouse, "roleName": s.role}


def _parameters(session: ServerSession) -> list[dict[str, Any]]:
    values: dict[str, Any] = {
        "AUTOCOMMIT": True, "TIMEZONE": "UTC", "CLIENT_SESSION_KEEP_ALIVE_HEARTBEAT_FREQUENCY": 3600,
        "CLIENT_STAGE_ARRAY_BINDING_THRESHOLD": 2_000_000_000, "CLIENT_PREFETCH_THREADS": 4,
        "CLIENT_RESULT_CHUNK_SIZE": 160, "PYTHON_CONNECTOR_QUERY_RESULT_FORMAT": "arrow",
        "JDBC_QUERY_RESULT_FORMAT": "arrow", "ODBC_QUERY_RESULT_FORMAT": "arrow",
        "QUERY_RESULT_FORMAT": "arrow", "CLIENT_TIMESTAMP_TYPE_MAPPING": "TIMESTAMP_LTZ",
        "TIMESTAMP_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF3 TZHTZM", "DATE_OUTPUT_FORMAT": "YYYY-MM-DD",
        "CLIENT_HONOR_CLIENT_TZ_FOR_TIMESTAMP_NTZ": True, "CLIENT_TELEMETRY_ENABLED": False,
        "CLIENT_METADATA_REQUEST_USE_CONNECTION_CTX": False, "QUERY_CONTEXT_CACHE_SIZE": 5,
    }
    return [{"name": name, "value": value} for name, value in values.items()]


async def token_request(request: Request) -> JSONResponse:
    master = parse_authorization(request.headers.get("authorization", "")) or ""
    session = _server(request).renew(master)
    if session is None:
        return _answer(protocol.failure("Master token is invalid: log in again.", "390115"))
    return _answer(protocol.success({"sessionToken": session.token, "validityInSecondsST": SESSION_VALIDITY_SECONDS,
                                     "masterToken": session.master_token,
                                     "validityInSecondsMT": MASTER_VALIDITY_SECONDS, "sessionId": session.session_id}))


@_logged_in
async def heartbeat(request: Request, session: ServerSession) -> JSONResponse:
    return _answer(protocol.success({}))


@_logged_in
async def session_endpoint(request: Request, session: ServerSession) -> JSONResponse:
    if request.query_params.get("delete", "").lower() == "true":
        await run_in_threadpool(_server(request).close_session, session.token)
    return _answer(protocol.success(None))


# -- queries ----------------------------------------------------------------------------------------
@_logged_in
async def query_request(request: Request, session: ServerSession) -> JSONResponse:
    try:
        body = await _json_body(request)
        sql = str(body.get("sqlText") or "")
        if not sql.strip():
            raise errors.ProgrammingError("Empty SQL statement.")
        parameters, rows = from_bindings(body.get("bindings"))
    except errors.Error as exc:
        code, state = protocol.code_of(exc)
        return _answer(protocol.failure(str(exc), code, state))
    request_id = request.query_params.get("requestId")
    log.debug("query request %s %s: %s", sql[:200], dict(request.query_params),
              {k: v for k, v in body.items() if k != "sqlText"})
    cancel = _CANCEL_QUERY.match(sql)
    if cancel:
        return await _cancel_by_id(request, session, cancel.group(1))
    describe_only = bool(body.get("describeOnly"))
    statement_parameters = {str(k).upper(): v for k, v in (body.get("parameters") or {}).items()}
    timeout = statement_parameters.get("STATEMENT_TIMEOUT_IN_SECONDS",
                                       session.parameters.get("STATEMENT_TIMEOUT_IN_SECONDS"))
    query = session.submit(sql, parameters, rows, request_id, describe_only=describe_only,
                           timeout=float(timeout) if timeout else None)
    if body.get("asyncExec"):
        return _answer(_in_progress(request, query, protocol.QUERY_IN_PROGRESS_ASYNC))
    return await _answer_when_done(request, session, query, describe_only)


async def _wait(query: Query, seconds: float) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(query.future)), seconds)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - the outcome is read from the future
        pass


async def _answer_when_done(request: Request, session: ServerSession, query: Query,
                            describe_only: bool = False) -> JSONResponse:
    await _wait(query, request.app.state.wait_seconds)
    if not query.done:
        return _answer(_in_progress(request, query, protocol.QUERY_IN_PROGRESS))
    return _answer(await run_in_threadpool(_finished, request, session, query, describe_only))


def _in_progress(request: Request, query: Query, code: str) -> dict[str, Any]:
    return protocol.success({"queryId": query.query_id, "getResultUrl": f"/queries/{query.query_id}/result",
                             "queryAbortsAfterSecs": 300, "progressDesc": None}, code,
                            "Query execution in progress")


def _finished(request: Request, session: ServerSession, query: Query, describe_only: bool) -> dict[str, Any]:
    try:
        return _finished_answer(request, session, query, describe_only)
    except Exception as exc:  # noqa: BLE001 - a result that cannot be sent is the client's error, not a 500
        log.exception("result of %s cannot be sent", query.query_id)
        code, state = protocol.code_of(exc) if isinstance(exc, errors.Error) else ("000603", "XX000")
        return protocol.failure(f"the result cannot be sent in Snowflake's format: {type(exc).__name__}: {exc}",
                                code, state, query.query_id)


def _finished_answer(request: Request, session: ServerSession, query: Query, describe_only: bool) -> dict[str, Any]:
    error = query.future.exception()
    if error is not None:
        if isinstance(error, QueryCanceled):
            code, state = protocol.TIMED_OUT if query.timed_out else protocol.CANCELED
            return protocol.failure(str(error), code, state, query.query_id)
        code, state = protocol.code_of(error)
        message = str(error)
        if not isinstance(error, errors.Error):
            log.exception("statement failed inside the server: %s", query.sql, exc_info=error)
            message = f"internal error in duckserve's server: {type(error).__name__}: {error}"
        return protocol.failure(message, code, state, query.query_id)
    result = query.result
    data: dict[str, Any] = {
        "parameters": _parameters(session), "queryId": query.query_id, "statementTypeId": query.statement_type,
        "version": 1, "queryResultFormat": "arrow", "numberOfBinds": 0,
        "arrayBindSupported": query.statement_type == protocol.DML_INSERT,
        "finalDatabaseName": session.connection.session.database,
        "finalSchemaName": session.connection.session.schema,
        "finalWarehouseName": session.connection.session.warehouse,
        "finalRoleName": session.connection.session.role,
        "queryContext": {"entries": []},
    }
    if result is None:
        if query.statement_type in protocol.DML_COLUMNS:
            header = _column_type(protocol.DML_COLUMNS[query.statement_type], "fixed")
        else:
            header = _column_type("status", "text")
        data.update({"rowtype": [header], "rowset": [] if describe_only else [["Statement executed successfully."]],
                     "total": 0 if describe_only else 1, "returned": 0 if describe_only else 1,
                     "queryResultFormat": "json"})
        return protocol.success(data)
    data["rowtype"] = result.rowtype
    if query.rowcount is not None:
        data["stats"] = _dml_stats(query)
        data.update({"rowset": [[str(query.rowcount)]], "total": 1, "returned": 1, "queryResultFormat": "json"})
        return protocol.success(data)
    data.update({"rowsetBase64": result.first_chunk_base64(), "total": result.num_rows,
                 "returned": result.num_rows})
    if result.chunk_count:
        base = str(request.base_url).rstrip("/")
        data["chunks"] = [{"url": f"{base}/queries/{query.query_id}/chunks/{i}", "rowCount": rows,
                           "uncompressedSize": max(1, rows * 64), "compressedSize": max(1, rows * 64)}
                          for i, rows in enumerate(result.chunk_sizes())]
        data["chunkHeaders"] = {"x-duckserve-chunk-key": query.chunk_key}
        data["qrmk"] = ""
    return protocol.success(data)


def _column_type(name: str, kind: str) -> dict[str, Any]:
    text = kind == "text"
    return {"name": name, "type": kind, "length": 16777216 if text else None, "byteLength": 16777216 if text else None,
            "nullable": True, "precision": None if text else 19, "scale": None if text else 0, "database": "",
            "schema": "", "table": "", "collation": None}


def _dml_stats(query: Query) -> dict[str, int]:
    count = query.rowcount or 0
    key = {protocol.DML_INSERT: "numRowsInserted", protocol.DML_UPDATE: "numRowsUpdated",
           protocol.DML_DELETE: "numRowsDeleted", protocol.DML_MERGE: "numRowsInserted"}.get(query.statement_type)
    return {key: count, "numDmlDuplicates": 0} if key else {}


@_logged_in
async def query_result(request: Request, session: ServerSession) -> JSONResponse:
    query = _find_query(request, session, request.path_params["query_id"])
    if query is None:
        return _answer(protocol.failure(f"Query {request.path_params['query_id']} does not exist or was not "
                                        "run in this session (only the last results are kept)", "000709", "02000"))
    return await _answer_when_done(request, session, query)


def _find_query(request: Request, session: ServerSession, query_id: str) -> Query | None:
    query = session.query(query_id)
    if query is not None:
        return query
    # a query of another session of the same user (Snowflake lets a user reach its own queries)
    for other in list(_server(request).sessions.values()):
        if other.identity.user == session.identity.user:
            query = other.query(query_id)
            if query is not None:
                return query
    return None


async def chunk(request: Request) -> Response:
    server = _server(request)
    query_id, index = request.path_params["query_id"], int(request.path_params["index"])
    query = None
    for session in list(server.sessions.values()):
        query = session.query(query_id)
        if query is not None:
            break
    key = request.headers.get("x-duckserve-chunk-key", "")
    if query is None or query.result is None or not key or key != query.chunk_key:
        return Response(b"result chunk not found (the result expired, or the chunk key is wrong)", 404)
    try:
        content = await run_in_threadpool(query.result.chunk, index)
    except IndexError:
        return Response(f"result {query_id} has no chunk {index}".encode(), 404)
    return Response(content, media_type="application/octet-stream")


@_logged_in
async def abort_request(request: Request, session: ServerSession) -> JSONResponse:
    body = await _json_body(request)
    request_id = str(body.get("requestId") or "")
    query = session.by_request.get(request_id)
    if query is None:
        return _answer(protocol.success(None, None, "the request is not running"))
    session.cancel(query)
    return _answer(protocol.success(None))


@_logged_in
async def abort_query(request: Request, session: ServerSession) -> JSONResponse:
    await request.body()
    query_id = request.path_params["query_id"]
    target = _find_query(request, session, query_id)
    if target is None:
        return _answer(protocol.failure(f"Identified SQL statement is not currently executing: {query_id}",
                                        "000605", "01000"))
    _owner(request, session, target).cancel(target)
    return _answer(protocol.success(None))


def _owner(request: Request, session: ServerSession, query: Query) -> ServerSession:
    return next((s for s in list(_server(request).sessions.values()) if s.query(query.query_id) is query), session)


async def _cancel_by_id(request: Request, session: ServerSession, query_id: str) -> JSONResponse:
    target = _find_query(request, session, query_id)
    if target is None:
        return _answer(protocol.failure(f"Identified SQL statement is not currently executing: {query_id} is not a "
                                        "query of this user", "000605", "01000"))
    canceled = _owner(request, session, target).cancel(target)
    text = f"query [{query_id}] terminated." if canceled else f"query [{query_id}] is not running."
    marker = session.submit(f"SELECT '{text}' AS \"SYSTEM$CANCEL_QUERY('{query_id}')\"", None, None, None)
    return await _answer_when_done(request, session, marker)


@_logged_in
async def monitoring(request: Request, session: ServerSession) -> JSONResponse:
    query = _find_query(request, session, request.path_params["query_id"])
    if query is None:
        return _answer(protocol.success({"queries": []}))
    entry: dict[str, Any] = {"id": query.query_id, "status": query.status, "sqlText": query.sql,
                             "startTime": int(query.started * 1000), "state": query.status}
    if query.done and query.future.exception() is not None:
        code, _ = protocol.CANCELED if query.canceled else protocol.code_of(query.future.exception())  # type: ignore[arg-type]
        entry.update({"errorCode": code, "errorMessage": str(query.future.exception())})
    return _answer(protocol.success({"queries": [entry]}))


async def telemetry(request: Request) -> JSONResponse:
    await request.body()
    return _answer(protocol.success(None))


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "sessions": len(_server(request).sessions)})


async def not_found(request: Request) -> JSONResponse:
    log.warning("no such endpoint: %s %s", request.method, request.url)
    return _answer(protocol.failure(f"duckserve's Snowflake server does not serve {request.method} "
                                    f"{request.url.path}", "390400"), 404)


def create_app(database: str = ":memory:", home: str | None = None, wait_seconds: float = WAIT_SECONDS) -> Any:
    """The server's app over ``database`` (a DuckDB file, or ``:memory:`` shared by all sessions)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server = Server(database, home)
        app.state.server = server
        app.state.wait_seconds = wait_seconds
        try:
            yield
        finally:
            await run_in_threadpool(server.close)

    routes = [
        Route("/session/v1/login-request", login, methods=["POST"]),
        Route("/session/token-request", token_request, methods=["POST"]),
        Route("/session/heartbeat", heartbeat, methods=["POST"]),
        Route("/session", session_endpoint, methods=["POST"]),
        Route("/queries/v1/query-request", query_request, methods=["POST"]),
        Route("/queries/v1/abort-request", abort_request, methods=["POST"]),
        Route("/queries/{query_id}/abort-request", abort_query, methods=["POST"]),
        Route("/queries/{query_id}/result", query_result, methods=["GET", "POST"]),
        Route("/queries/{query_id}/chunks/{index:int}", chunk, methods=["GET"]),
        Route("/monitoring/queries/{query_id}", monitoring, methods=["GET"]),
        Route("/telemetry/send", telemetry, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
    return _SingleSlashes(Starlette(routes=routes, lifespan=lifespan))


class _SingleSlashes:
    """Drivers join URL parts with a slash of their own (``/monitoring/queries//<id>``): collapse them."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope, path=re.sub("/{2,}", "/", scope["path"]))
        await self.app(scope, receive, send)
