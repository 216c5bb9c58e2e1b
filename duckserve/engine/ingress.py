"""A service's public HTTP endpoint (Snowflake's ingress), one process per service.

    python -m duckserve.engine.ingress --home HOME --service DB.SCHEMA.NAME --port 0 --port-file F

``POST /<method>`` takes the service-function protocol's JSON body (``{"data": [[i, args...], ...]}``;
``predict_proba`` is ``/predict-proba``, and the underscore form works too) and, for a caller whose
programmatic access token passes, forwards it unchanged to one of the service's instances (round
robin) and answers with the instance's status, content type and body. The caller's role must own the
service, be ACCOUNTADMIN, or hold the service role ``svc!ALL_ENDPOINTS_USAGE``.

The service's catalog record is re-read at most once a second (another process may scale, restart
or drop the service), and so are a token's user, role and grants: a removed token or a revoked grant
takes effect within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from duckserve.engine import access as A
from duckserve.engine.account import Account, display_key
from duckserve.engine.catalog import CatalogObject
from duckserve.engine.names import DEFAULT_DATABASE, DEFAULT_SCHEMA, ObjectName, display, normalize
from duckserve.engine.tokens import TokenError, authenticate, how_to_get_a_token, parse_authorization
from duckserve.errors import Error, ProgrammingError

log = logging.getLogger("duckserve.ingress")

#: how long a service record and a token's authorization decision may be reused
CACHE_SECONDS = 1.0
#: instances in these states are not sent requests (any other state is tried; a refused
#: connection moves on to the next instance)
_DEAD_STATES = frozenset({"FAILED", "STOPPED", "DONE"})
#: headers of the instance's answer passed back to the caller besides the content type
_PASSED_BACK = ("retry-after",)
_ENDPOINT_ROLE = "ALL_ENDPOINTS_USAGE"


@dataclass(frozen=True)
class _Caller:
    user: str
    role: str


@dataclass(frozen=True)
class _Decision:
    caller: _Caller
    service: CatalogObject | None
    allowed: bool


class _HTTPError(Exception):
    """An answer of the ingress itself (not the instance's): status and message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": status}, status_code=status, headers=headers)


def instance_urls(service: CatalogObject) -> list[tuple[int, str]]:
    """(instance_id, base URL) of every instance of a service record whose handle has an endpoint
    (wherever its runtime runs it: a local process, a container)."""
    from duckserve.engine.runtimes import InstanceHandle

    found: list[tuple[int, str]] = []
    for instance in service.props.get("instances") or []:
        if not isinstance(instance, dict) or str(instance.get("status", "")).upper() in _DEAD_STATES:
            continue
        handle = instance.get("handle")
        endpoint = InstanceHandle.from_dict(handle).endpoint if isinstance(handle, dict) else None
        if endpoint:
            found.append((int(instance.get("instance_id", len(found))), endpoint))
    return found


class Ingress:
    """The endpoint of one service: authentication, authorization and forwarding."""

    def __init__(self, home: Path | str, service: ObjectName, cache_seconds: float = CACHE_SECONDS,
                 upstream_timeout: float = 600.0, also_known_as: ObjectName | None = None) -> None:
        self.account = Account(home)
        self.service_name = service.in_schema(DEFAULT_DATABASE, DEFAULT_SCHEMA)
        #: the name with its case kept, tried when the SQL reading finds nothing (a catalog key
        #: such as DUCKSERVE.PUBLIC.my_svc, from a quoted lower-case name, arrives unquoted)
        self._alias = also_known_as.in_schema(DEFAULT_DATABASE, DEFAULT_SCHEMA) if also_known_as else None
        self.cache_seconds = cache_seconds
        self.upstream_timeout = upstream_timeout
        self._service_cache: tuple[float, CatalogObject | None] | None = None
        self._decisions: dict[str, tuple[float, _Decision]] = {}
        self._next = itertools.count()
        self.client: httpx.AsyncClient | None = None

    @property
    def label(self) -> str:
        return self.service_name.qualified

    # -- catalog (called in a worker thread: SQLite may wait for another process's lock) ----------
    def _service(self) -> CatalogObject | None:
        moment = time.monotonic()
        if self._service_cache is not None and moment - self._service_cache[0] < self.cache_seconds:
            return self._service_cache[1]
        name = self.service_name
        found = self.account.catalog.get(A.SERVICE, name.name, name.database, name.schema)
        if found is None and self._alias is not None and self._alias != name:
            alias = self._alias
            found = self.account.catalog.get(A.SERVICE, alias.name, alias.database, alias.schema)
        self._service_cache = (moment, found)
        return found

    def _decide(self, secret: str) -> _Decision:
        """Who the token is and whether it may call the service; raises TokenError."""
        key = hashlib.sha256(secret.encode("utf-8")).hexdigest()
        moment = time.monotonic()
        cached = self._decisions.get(key)
        if cached is not None and moment - cached[0] < self.cache_seconds:
            return cached[1]
        user, role = authenticate(self.account, secret)
        service = self._service()
        allowed = False
        if service is not None:
            roles = self.account.effective_roles(role)
            allowed = (A.ACCOUNTADMIN in roles or service.owner in roles
                       or self.account.role_has_service_role(roles, service, _ENDPOINT_ROLE))
        decision = _Decision(_Caller(user, role), service, allowed)
        if len(self._decisions) > 10_000:
            self._decisions.clear()
        self._decisions[key] = (moment, decision)
        return decision

    # -- requests ---------------------------------------------------------------------------------
    async def authorize(self, request: Request) -> _Decision:
        header = request.headers.get("authorization")
        secret = parse_authorization(header) if header else None
        challenge = {"WWW-Authenticate": 'Bearer realm="duckserve"'}
        if secret is None:
            problem = "no Authorization header" if header is None else "the Authorization header has no token"
            raise _HTTPError(401, f"service {self.label}: {problem}; {how_to_get_a_token()}", challenge)
        try:
            decision = await run_in_threadpool(self._decide, secret)
        except TokenError as exc:
            raise _HTTPError(401, f"service {self.label}: {exc}", challenge) from exc
        if decision.service is None:
            raise _HTTPError(404, f"service {self.label} does not exist (it was dropped or never created)")
        if not decision.allowed:
            svc = display_key(decision.service)
            role = display(decision.caller.role)
            raise _HTTPError(
                403,
                f"role {role} of user {display(decision.caller.user)} may not call the endpoint of service {svc}: "
                f"run GRANT SERVICE ROLE {svc}!{_ENDPOINT_ROLE} TO ROLE {role} "
                f"(as the service's owner {display(decision.service.owner)} or ACCOUNTADMIN)",
            )
        return decision

    def _unavailable(self, service: CatalogObject, problem: str) -> _HTTPError:
        svc = display_key(service)
        status = str(service.props.get("status") or "UNKNOWN")
        message = f"service {svc} is not available: {problem} (status {status})"
        if status == "SUSPENDED":
            message += f"; run ALTER SERVICE {svc} RESUME"
        else:
            message += f"; see SHOW SERVICE CONTAINERS IN SERVICE {svc} for its instances"
        return _HTTPError(503, message, {"Retry-After": "1"})

    async def forward(self, request: Request, method: str, decision: _Decision) -> Response:
        assert self.client is not None and decision.service is not None
        service = decision.service
        instances = instance_urls(service)
        if not instances:
            raise self._unavailable(service, "no instance is ready")
        body = await request.body()
        headers = {"content-type": request.headers.get("content-type", "application/json"),
                   "sf-context-current-user": decision.caller.user}
        if "accept" in request.headers:
            headers["accept"] = request.headers["accept"]
        start = next(self._next)
        failures = []
        for attempt in range(len(instances)):
            instance_id, base = instances[(start + attempt) % len(instances)]
            try:
                answer = await self.client.post(f"{base}/{quote(method, safe='')}", content=body, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                    httpx.WriteError) as exc:
                failures.append(f"instance {instance_id}: {type(exc).__name__}")
                continue
            except httpx.TimeoutException as exc:
                raise _HTTPError(504, f"service {display_key(service)}: instance {instance_id} did not answer "
                                      f"within {self.upstream_timeout:.0f} s") from exc
            passed = {"content-type": answer.headers.get("content-type", "application/octet-stream")}
            for name in _PASSED_BACK:
                if name in answer.headers:
                    passed[name] = answer.headers[name]
            return Response(answer.content, status_code=answer.status_code, headers=passed)
        raise self._unavailable(service, "no instance could be reached (" + ", ".join(failures) + ")")

    async def invoke(self, request: Request) -> Response:
        started = time.perf_counter()
        caller: _Caller | None = None
        try:
            decision = await self.authorize(request)
            caller = decision.caller
            response = await self.forward(request, request.path_params["method"], decision)
        except _HTTPError as exc:
            response = _error_response(exc.status, exc.message, exc.headers)
        except Error as exc:  # the catalog failed (locked for 30 s, unreadable)
            response = _error_response(503, f"service {self.label}: {exc}", {"Retry-After": "1"})
        except Exception as exc:
            log.exception("ingress of service %s failed on %s %s", self.label, request.method, request.url.path)
            response = _error_response(500, f"service {self.label}: internal error in the ingress: {exc!r}")
        log.info("%s %s %d %.1fms user=%s role=%s", request.method, request.url.path, response.status_code,
                 (time.perf_counter() - started) * 1000,
                 caller.user if caller else "-", caller.role if caller else "-")
        return response

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(self.upstream_timeout, connect=5.0, pool=60.0)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)
        # trust_env off: an HTTP(S)_PROXY in the environment must not capture 127.0.0.1 traffic
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
            self.client = client
            try:
                yield
            finally:
                self.client = None


_NAME_PART = re.compile(r'"((?:[^"]|"")*)"|([^."]+)')


def parse_service_name(text: str, keep_case: bool = False) -> ObjectName:
    """``DB.SCHEMA.NAME`` as written in SQL: unquoted parts upper-cased (unless ``keep_case``),
    quoted parts kept."""
    parts: list[str] = []
    position = 0
    while True:
        match = _NAME_PART.match(text, position)
        if match is None:
            raise ProgrammingError(f"invalid service name {text!r}: write DB.SCHEMA.NAME")
        quoted, plain = match.group(1), match.group(2)
        parts.append(normalize(quoted.replace('""', '"'), True) if quoted is not None
                     else normalize(plain.strip(), keep_case))
        position = match.end()
        if position == len(text):
            break
        if text[position] != "." or len(parts) == 3:
            raise ProgrammingError(f"invalid service name {text!r}: write DB.SCHEMA.NAME")
        position += 1
    if any(not p for p in parts):
        raise ProgrammingError(f"invalid service name {text!r}: write DB.SCHEMA.NAME")
    padded = ["", "", *parts][-3:]
    return ObjectName(padded[2], padded[1], padded[0])


def create_app(home: Path | str, service: ObjectName | str) -> Starlette:
    """The ingress application of one service."""
    if isinstance(service, str):
        ingress = Ingress(home, parse_service_name(service), also_known_as=parse_service_name(service, keep_case=True))
    else:
        ingress = Ingress(home, service)
    routes = [
        Route("/healthz", ingress.healthz, methods=["GET"]),
        Route("/{method}", ingress.invoke, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=ingress.lifespan)
    app.state.ingress = ingress
    return app


def _nodelay_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with TCP_NODELAY on every accepted socket: with Nagle's algorithm on,
    small keep-alive answers stall about 40 ms (uvicorn issue #3149)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class NoDelayProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)

    return NoDelayProtocol


def write_port_file(path: Path | str, port: int) -> None:
    """Announce the port atomically: readers see no file or the whole number, never half of it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, target)


def bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(home: Path | str, service: str, host: str = "127.0.0.1", port: int = 0,
          port_file: Path | str | None = None, on_listening: Callable[[int], None] | None = None) -> None:
    """Run the ingress until SIGTERM/SIGINT; the port is written to ``port_file`` once serving."""
    import uvicorn

    app = create_app(home, service)
    sock = bind(host, port)
    bound_port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, http=_nodelay_protocol(), lifespan="on", access_log=False, log_config=None,
                            timeout_keep_alive=75, workers=1)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            if port_file is not None:
                write_port_file(port_file, bound_port)
            if on_listening is not None:
                on_listening(bound_port)
            log.info("ingress of service %s listening on http://%s:%d", app.state.ingress.label, host, bound_port)
        await task

    asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duckserve.engine.ingress",
                                     description="The public HTTP endpoint of one duckserve service.")
    parser.add_argument("--home", required=True, help="the duckserve home holding catalog.sqlite")
    parser.add_argument("--service", required=True, help="the service, DB.SCHEMA.NAME")
    # a runtime passes the address and the port file in the environment
    parser.add_argument("--host", default=os.environ.get("DUCKSERVE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DUCKSERVE_PORT") or 0),
                        help="0 picks a free port")
    parser.add_argument("--port-file", default=os.environ.get("DUCKSERVE_PORT_FILE") or None,
                        help="where to write the port once listening")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "httpcore"):  # one line per request is ours; theirs would double it
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        parse_service_name(args.service)
        serve(args.home, args.service, args.host, args.port, args.port_file)
    except Error as exc:
        print(f"ingress: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
