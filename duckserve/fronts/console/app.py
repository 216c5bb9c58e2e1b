"""The console's HTTP side: the built front end, and a JSON API whose every answer comes from SQL
run through the signed-in session (``pages``, ``actions``, ``worksheet``, ``metrics``).

A browser signs in (``POST /api/session/token`` or ``/local``) and gets an HttpOnly, SameSite=Strict
cookie; requests that change anything must also carry the ``X-Duckserve-Console`` header, which a
page of another site cannot send without asking, and the Host header must be one this console
serves (no DNS rebinding). Errors are JSON: the message SQL gives, its class, and the statement.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from duckserve import errors
from duckserve.fronts.console import actions, metrics, pages
from duckserve.fronts.console.sessions import Console, ConsoleSession, SignInRefused, by_local_trust, by_token

STATIC = Path(__file__).parent / "static"
COOKIE = "duckserve_console"
CSRF_HEADER = "x-duckserve-console"
#: how long an action or a worksheet run is waited for before the browser is told to poll
QUICK_SECONDS = 0.25


class NotSignedIn(SignInRefused):
    """A request without a live console session (answered with 401: the page shows the sign-in)."""


def _status(exc: errors.Error) -> int:
    if isinstance(exc, SignInRefused):
        return 401
    if isinstance(exc, errors.InsufficientPrivileges):
        return 403
    if isinstance(exc, errors.ObjectNotFound):
        return 404
    return 400


def error_response(exc: errors.Error, sql: str | None = None) -> JSONResponse:
    return JSONResponse({"error": str(exc), "kind": type(exc).__name__, "sql": sql}, status_code=_status(exc))


def _session(request: Request) -> ConsoleSession:
    console: Console = request.app.state.console
    session = console.session(request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedIn("sign in to the console: with a programmatic access token, or on this machine with the "
                          "link `duckserve ui` printed")
    try:
        session.check()
    except SignInRefused:
        console.sign_out(session.session_id)
        raise
    return session


def _identity_json(request: Request, session: ConsoleSession) -> dict[str, Any]:
    console: Console = request.app.state.console
    reader = pages.Reader(session.connection)
    if session.identity.restriction:
        roles = [session.identity.restriction]
    else:
        roles = sorted({*pages.roles_of(reader, session.identity.user), "PUBLIC", session.role})
    return {"user": session.identity.user, "role": session.role, "roles": roles, "method": session.identity.method,
            "restricted_to": session.identity.restriction, "home": console.home,
            "database": "in-memory" if console.database.startswith(":memory:") else console.database}


async def _signed_in(request: Request, session: ConsoleSession) -> JSONResponse:
    response = JSONResponse(await run_in_threadpool(_identity_json, request, session))
    response.set_cookie(COOKIE, session.session_id, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise errors.ProgrammingError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise errors.ProgrammingError("the request body must be a JSON object")
    return body


# -- sign-in ----------------------------------------------------------------------------------------
async def sign_in_token(request: Request) -> Response:
    body = await _json_body(request)
    console: Console = request.app.state.console
    identity = by_token(console.account, str(body.get("token") or ""))
    return await _signed_in(request, await run_in_threadpool(console.sign_in, identity))


async def sign_in_local(request: Request) -> Response:
    body = await _json_body(request)
    console: Console = request.app.state.console
    identity = by_local_trust(console.account, console.local_key, str(body.get("key") or ""),
                              request.client.host if request.client else None,
                              str(body.get("user") or console.local_user or ""), str(body.get("role") or ""))
    return await _signed_in(request, await run_in_threadpool(console.sign_in, identity))


def who(request: Request) -> Response:
    session = _session(request)
    return JSONResponse(_identity_json(request, session))


def sign_out(request: Request) -> Response:
    console: Console = request.app.state.console
    session_id = request.cookies.get(COOKIE)
    if session_id:
        console.sign_out(session_id)
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(COOKIE, path="/")
    return response


async def use_role(request: Request) -> Response:
    body = await _json_body(request)
    session = _session(request)
    await run_in_threadpool(session.use_role, str(body.get("role") or ""))
    return JSONResponse(await run_in_threadpool(_identity_json, request, session))


# -- pages ------------------------------------------------------------------------------------------
def _page(read: Callable[..., dict[str, Any]], *names: str) -> Callable[[Request], Response]:
    """An endpoint that runs ``read(reader, *query parameters)`` on the session's connection."""

    def endpoint(request: Request) -> Response:
        session = _session(request)
        reader = pages.Reader(session.connection)
        arguments = []
        for name in names:
            value = request.query_params.get(name)
            if value is None:
                raise errors.ProgrammingError(f"the request lacks the {name!r} parameter")
            arguments.append(value)
        try:
            return JSONResponse(read(reader, *arguments))
        except errors.Error as exc:
            return error_response(exc, reader.statements[-1] if reader.statements else None)

    return endpoint


def _logs(reader: pages.Reader, name: str, instance: str, container: str) -> dict[str, Any]:
    return pages.logs(reader, name, int(instance), container)


def service_metrics(request: Request) -> Response:
    session = _session(request)
    reader = pages.Reader(session.connection)
    name = request.query_params.get("name") or ""
    try:
        window = float(request.query_params.get("window", "300"))
    except ValueError:
        window = 300.0
    try:
        return JSONResponse(metrics.series(reader, request.app.state.history, name, max(30.0, min(window, 6 * 3600))))
    except errors.Error as exc:
        return error_response(exc, reader.statements[-1] if reader.statements else None)


# -- actions and the worksheet ----------------------------------------------------------------------
async def run_action(request: Request) -> Response:
    body = await _json_body(request)
    session = _session(request)
    options = body.get("options")
    sql = actions.statement(str(body.get("action") or ""), str(body.get("service") or ""),
                            options if isinstance(options, dict) else {})
    if not body.get("confirm"):
        return JSONResponse({"sql": sql, "state": "PREVIEW"})
    connection = await run_in_threadpool(session.side_connection, "actions")
    operation = await run_in_threadpool(session.operations.start, connection, sql, QUICK_SECONDS)
    return JSONResponse(operation.as_json())


def operation_status(request: Request) -> Response:
    session = _session(request)
    operation = session.operations.get(request.path_params["operation_id"])
    if operation is None:
        raise errors.ObjectNotFound("no such operation in this session (the console keeps the last 64)")
    return JSONResponse(operation.as_json())


async def worksheet_run(request: Request) -> Response:
    body = await _json_body(request)
    session = _session(request)
    worksheet = await run_in_threadpool(session.worksheet)
    run = await run_in_threadpool(worksheet.start, str(body.get("sql") or ""), QUICK_SECONDS)
    return JSONResponse(run.as_json())


def worksheet_status(request: Request) -> Response:
    run = _session(request).worksheet().get(request.path_params["run_id"])
    if run is None:
        raise errors.ObjectNotFound("no such worksheet run in this session")
    return JSONResponse(run.as_json())


def worksheet_cancel(request: Request) -> Response:
    return JSONResponse({"canceled": _session(request).worksheet().cancel(request.path_params["run_id"])})


# -- the front end ----------------------------------------------------------------------------------
def index(request: Request) -> Response:
    page = STATIC / "index.html"
    if not page.exists():
        return Response("the console's front end is not built: run `make console` (needs Node.js)", status_code=500)
    return FileResponse(page, headers={"Cache-Control": "no-cache"})


async def _csrf_guard(request: Request, call_next: Callable[[Request], Any]) -> Response:
    if request.method not in ("GET", "HEAD", "OPTIONS") and request.headers.get(CSRF_HEADER) != "1":
        return JSONResponse({"error": "requests that change something must carry the X-Duckserve-Console: 1 header",
                             "kind": "InterfaceError", "sql": None}, status_code=403)
    response: Response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def create_app(console: Console, allowed_hosts: list[str] | None = None) -> Starlette:
    routes = [
        Route("/", index),
        Route("/api/session", who, methods=["GET"]),
        Route("/api/session", sign_out, methods=["DELETE"]),
        Route("/api/session/token", sign_in_token, methods=["POST"]),
        Route("/api/session/local", sign_in_local, methods=["POST"]),
        Route("/api/session/role", use_role, methods=["POST"]),
        Route("/api/services", _page(pages.services)),
        Route("/api/service", _page(pages.service, "name")),
        Route("/api/job", _page(pages.job, "name")),
        Route("/api/logs", _page(_logs, "name", "instance", "container")),
        Route("/api/metrics", service_metrics),
        Route("/api/models", _page(pages.models)),
        Route("/api/model", _page(pages.model, "name")),
        Route("/api/pools", _page(pages.pools)),
        Route("/api/repositories", _page(pages.repositories)),
        Route("/api/actions", run_action, methods=["POST"]),
        Route("/api/operations/{operation_id}", operation_status),
        Route("/api/worksheet", worksheet_run, methods=["POST"]),
        Route("/api/worksheet/{run_id}", worksheet_status),
        Route("/api/worksheet/{run_id}/cancel", worksheet_cancel, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
    ]

    async def handle_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.Error)
        return error_response(exc)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        console.close()

    middleware = [Middleware(BaseHTTPMiddleware, dispatch=_csrf_guard)]
    if allowed_hosts:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={errors.Error: handle_error},
                    lifespan=lifespan)
    app.state.console = console
    app.state.history = metrics.InstanceHistory()
    return app

