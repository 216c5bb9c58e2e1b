"""A small HTTP/1.1 server for ASGI applications, with the limits a public endpoint needs.

Both network servers of duckserve run on it: the inference server inside each instance and the
ingress in front of a service. It exists because the one-row path is dominated by the HTTP layer:
uvicorn with h11 (the only parser a model environment may have, since the server adds nothing but
starlette, uvicorn and gunicorn) spends more CPU per small request than the model does. Here a
request's head is parsed with a few ``bytes`` operations, the body is handed to the application
in one piece, and the answer is written with one ``transport.write``.

What it enforces (`http_messages.Limits`, where requests are parsed): the size of a request's head (431) and body (413, with the limit in
the message, before the body is read when Content-Length announces it), a deadline for the head
and another for the body once the head is in (408: a slow client cannot hold a connection open by
dribbling bytes), a keep-alive idle timeout, and a bound on open connections (503 to the ones
beyond it). Every answer the server gives itself is JSON, ``{"error": ..., "code": status}``.
Pipelined requests on one connection are answered in order. TLS is the ssl module's, given an
``ssl.SSLContext``.

ASGI coverage: HTTP (``http.request`` with the whole body, ``http.disconnect``), the response
start/body messages (streamed with chunked encoding when the application gives no Content-Length)
and the lifespan protocol. No WebSockets, no HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from duckserve.inference_server.http_messages import (
    REASONS,
    ChunkedBody,
    Limits,
    ProtocolViolation,
    RequestHead,
    error_response,
    parse_head,
    render_response,
)

logger = logging.getLogger("duckserve.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: how often the server looks for connections past their deadline (timeouts are this precise)
CLOCK_SECONDS = 0.1


class Server:
    """The shared state of one listening socket: the application, limits and open connections.

    One clock per server checks the connections' deadlines (`HTTPProtocol.deadline`) every
    CLOCK_SECONDS: a timer per request and phase (head, body, keep-alive) cost a heap push and a
    cancellation three times per request."""

    def __init__(self, app: ASGIApp, limits: Limits | None = None, *, scheme: str = "http",
                 lifespan_state: dict[str, Any] | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.scheme = scheme
        self.connections: set[HTTPProtocol] = set()
        self.state = lifespan_state if lifespan_state is not None else {}
        self.stopping = False
        self._clock: asyncio.TimerHandle | None = None

    def protocol(self) -> HTTPProtocol:
        if self._clock is None:
            self._clock = asyncio.get_running_loop().call_later(CLOCK_SECONDS, self._tick)
        return HTTPProtocol(self)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in [c for c in self.connections if c.expire is not None and c.deadline <= now]:
            expire, connection.expire = connection.expire, None
            if expire is not None:
                expire()
        self._clock = loop.call_later(CLOCK_SECONDS, self._tick)

    def stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()


class HTTPProtocol(asyncio.Protocol):
    """One connection: parse requests, run the application, write its answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: RequestHead | None = None
        self.chunked: ChunkedBody | None = None
        self.task: asyncio.Task[None] | None = None
        #: what to do at `deadline` (a loop time), if anything: the phase's timeout
        self.expire: Callable[[], None] | None = None
        self.deadline = 0.0
        self.closed = False
        self.requests = 0
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.disconnected: asyncio.Event | None = None
        self.reading_paused = False
        self.eof = False  # the client half-closed: answer what it sent, then close

    # -- connection -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        self.local = (str(local[0]), int(local[1])) if isinstance(local, tuple) and len(local) >= 2 else None
        if len(self.server.connections) >= self.limits.max_connections or self.server.stopping:
            transport.write(error_response(503, f"too many open connections (the limit is "
                                                 f"{self.limits.max_connections}); retry later",
                                            [(b"retry-after", b"1")]))
            self._close()
            return
        self.server.connections.add(self)
        self._arm(self.limits.keep_alive_timeout, self._idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._disarm()
        if self.disconnected is not None:
            self.disconnected.set()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
        self.server.connections.discard(self)
        self._disarm()

    # -- timers ---------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self.deadline = self.loop.time() + seconds
        self.expire = callback

    def _disarm(self) -> None:
        self.expire = None

    def _idle_timeout(self) -> None:
        self._close()

    def _head_timeout(self) -> None:
        self._reject(ProtocolViolation(408, f"the request head did not arrive within "
                                            f"{self.limits.head_timeout:g} s"))

    def _body_timeout(self) -> None:
        self._reject(ProtocolViolation(408, f"the request body did not arrive within "
                                            f"{self.limits.body_timeout:g} s"))

    def _reject(self, problem: ProtocolViolation) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(error_response(problem.status, problem.message))
        self._close()

    # -- reading --------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.buffer and self.head is None and self.task is None:
            self._arm(self.limits.head_timeout, self._head_timeout)  # a new request begins
        self.buffer += data
        if self.task is None:
            self._advance()
        elif len(self.buffer) > self.limits.max_head_bytes + self.limits.max_body_bytes and not self.reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()  # a pipelining client waits for its earlier answers
            self.reading_paused = True

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.task is None:
            self._close()
            return None
        return True  # keep the transport to answer the requests in flight and pipelined behind it

    def _advance(self) -> None:
        """Parse as much as the buffer holds; start the application once a request is complete."""
        try:
            if self.head is None:
                if not self.buffer:
                    return
                while self.buffer[:2] == b"\r\n":  # tolerated before a request line (RFC 9112)
                    del self.buffer[:2]
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > self.limits.max_head_bytes:
                        raise ProtocolViolation(431, f"the request head is larger than the limit of "
                                                     f"{self.limits.max_head_bytes} bytes")
                    return
                if end > self.limits.max_head_bytes:
                    raise ProtocolViolation(431, f"the request head is larger than the limit of "
                                                 f"{self.limits.max_head_bytes} bytes")
                raw = bytes(self.buffer[:end])
                del self.buffer[:end + 4]
                self.head = parse_head(raw, self.limits)
                if self.head.chunked:
                    self.chunked = ChunkedBody(self.limits.max_body_bytes)
                self._arm(self.limits.body_timeout, self._body_timeout)
                if self.head.expect_continue and self.head.version == "1.1" and not self.buffer:
                    assert self.transport is not None
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = self.head
            if self.chunked is not None:
                self.chunked.feed(self.buffer)
                if not self.chunked.done:
                    return
                body = self.chunked.body()
                self.chunked = None
            else:
                length = head.content_length or 0
                if len(self.buffer) < length:
                    return
                body = bytes(self.buffer[:length])
                del self.buffer[:length]
        except ProtocolViolation as problem:
            self._reject(problem)
            return
        self.head = None
        self._disarm()
        self.requests += 1
        self.task = self.loop.create_task(self._run(head, body))

    # -- the application ------------------------------------------------------------------------
    async def _run(self, head: RequestHead, body: bytes) -> None:
        keep_alive = head.keep_alive and self.requests < self.limits.max_requests_per_connection
        exchange = _Exchange(self, head, body, keep_alive)
        try:
            await self.server.app(exchange.scope(), exchange.receive, exchange.send)
        except Exception:  # noqa: BLE001 - the application failed: answer 500 if nothing was sent
            logger.exception("the application failed on %s %s", head.method,
                             head.target.split(b"?")[0][:200].decode("latin-1"))
            if not exchange.started and not self.closed and self.transport is not None:
                self.transport.write(error_response(500, "internal server error"))
                exchange.started = exchange.complete = True
                exchange.keep_alive = False
        finally:
            if not exchange.complete and exchange.started:
                exchange.keep_alive = False  # a half-sent answer: the connection cannot be reused
            elif not exchange.started and not self.closed and self.transport is not None:
                self.transport.write(error_response(500, "the application sent no response"))
                exchange.keep_alive = False
            self.task = None
        if self.closed:
            return
        if not exchange.keep_alive or self.server.stopping:
            self._close()
            return
        self._arm(self.limits.keep_alive_timeout, self._idle_timeout)
        if self.reading_paused and self.transport is not None:
            self.transport.resume_reading()
            self.reading_paused = False
        if self.buffer:
            self._arm(self.limits.head_timeout, self._head_timeout)
            self._advance()
        if self.eof and self.task is None:
            self._close()  # nothing more will come: what is left in the buffer is an incomplete request

    def idle(self) -> bool:
        return self.task is None and self.head is None and not self.buffer


class _Exchange:
    """One request's ASGI scope, receive and send."""

    __slots__ = ("protocol", "head", "body", "keep_alive", "started", "complete", "status", "headers",
                 "streaming", "chunked", "body_sent")

    def __init__(self, protocol: HTTPProtocol, head: RequestHead, body: bytes, keep_alive: bool) -> None:
        self.protocol = protocol
        self.head = head
        self.body = body
        self.keep_alive = keep_alive
        self.started = False
        self.complete = False
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []
        self.streaming = False
        self.chunked = False
        self.body_sent = False

    def scope(self) -> Scope:
        head = self.head
        path_b, _, query = head.target.partition(b"?")
        if path_b.startswith((b"http://", b"https://")):  # absolute form: keep the path
            path_b = b"/" + path_b.split(b"/", 3)[-1] if path_b.count(b"/") >= 3 else b"/"
        server = self.protocol.server
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": head.version,
            "method": head.method, "scheme": server.scheme, "path": unquote(path_b.decode("latin-1")),
            "raw_path": path_b, "query_string": query, "root_path": "", "headers": head.headers,
            "client": self.protocol.client, "server": self.protocol.local, "state": dict(server.state),
        }

    async def receive(self) -> Message:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        protocol = self.protocol
        if not protocol.closed:
            if protocol.disconnected is None:
                protocol.disconnected = asyncio.Event()
            await protocol.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        protocol = self.protocol
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(message["status"])
            self.headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
            return
        if kind != "http.response.body":
            return
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.complete:
            return
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        head_only = self.head.method == "HEAD"
        transport = protocol.transport
        if protocol.closed or transport is None:
            self.complete = not more
            return
        if not self.streaming and not more:
            # the common case: the whole answer at once
            headers = self.headers
            if any(n == b"content-length" for n, _ in headers):
                headers = [(n, v) for n, v in headers if n != b"content-length"]
            if any(n == b"connection" and v.lower() == b"close" for n, v in headers):
                self.keep_alive = False
                headers = [(n, v) for n, v in headers if n != b"connection"]
            transport.write(render_response(self.status, headers, body, close=not self.keep_alive,
                                            head_only=head_only))
            self.complete = True
            return
        if not self.streaming:
            self.streaming = True
            declared = [v for n, v in self.headers if n == b"content-length"]
            lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, REASONS.get(self.status, "Unknown").encode())]
            lines += [n + b": " + v + b"\r\n" for n, v in self.headers if n != b"connection"]
            if not declared:
                lines.append(b"transfer-encoding: chunked\r\n")
            if not self.keep_alive:
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            transport.write(b"".join(lines))
            self.chunked = not declared
        chunked = self.chunked
        if body and not head_only:
            transport.write(b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)
        if not more:
            if chunked and not head_only:
                transport.write(b"0\r\n\r\n")
            self.complete = True


# -------------------------------------------------------------------------------------------------
# running a server


class Lifespan:
    """The ASGI lifespan protocol around an application: startup before serving, shutdown after."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.supported = True

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._started, self._stopped = loop.create_future(), loop.create_future()
        self._task = loop.create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started

    async def shutdown(self) -> None:
        if self._task is None or not self.supported:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        assert self._stopped is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._stopped), timeout=30)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except BaseException as exc:  # noqa: BLE001
            assert self._started is not None and self._stopped is not None
            if not self._started.done():
                self._started.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if not self._stopped.done():
                self._stopped.set_result(None)
            return
        finally:
            assert self._started is not None and self._stopped is not None
            if not self._started.done():  # the application returned without a lifespan: none needed
                self.supported = False
                self._started.set_result(None)
            if not self._stopped.done():
                self._stopped.set_result(None)

    async def _send(self, message: Message) -> None:
        assert self._started is not None and self._stopped is not None
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self._started.set_exception(RuntimeError(message.get("message") or "application startup failed"))
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._stopped.set_result(None)


def lean_log_records() -> None:
    """Leave out of log records what the servers' formats never show (the calling thread, the
    multiprocessing name, the source line: the knobs of the logging HOWTO's "Optimization" section).
    Each server writes a line per request; this takes a fifth off that line's cost."""
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None


class StartupFailed(Exception):
    """The application's lifespan startup failed."""


async def serve(app: ASGIApp, sock: socket.socket, *, limits: Limits | None = None,
                ssl: ssl_module.SSLContext | None = None, grace: float = 5.0,
                on_started: Callable[[], None] | None = None, stop: asyncio.Event | None = None,
                handle_signals: bool = True) -> None:
    """Serve ``app`` on a listening socket until SIGTERM/SIGINT (or ``stop`` is set); requests in
    flight get ``grace`` seconds to finish. Raises StartupFailed when the lifespan startup fails."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    lifespan = Lifespan(app)
    try:
        await lifespan.startup()
    except Exception as exc:
        raise StartupFailed(str(exc)) from exc
    limits = limits or Limits()
    server = Server(app, limits, scheme="https" if ssl is not None else "http", lifespan_state=lifespan.state)
    sock.setblocking(False)
    listener = await loop.create_server(server.protocol, sock=sock, ssl=ssl, backlog=2048,
                                        ssl_handshake_timeout=limits.head_timeout if ssl is not None else None)
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
    if on_started is not None:
        on_started()
    try:
        await stop.wait()
    finally:
        server.stopping = True
        server.stop_clock()
        listener.close()
        for connection in list(server.connections):
            if connection.idle():
                connection._close()
        deadline = time.monotonic() + grace
        while any(not c.idle() for c in server.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(server.connections):
            connection._close()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)
        await lifespan.shutdown()


def run(app: ASGIApp, sock: socket.socket, **options: Any) -> int:
    """`serve` in a new event loop; 0 on a clean stop, 3 when startup failed."""
    try:
        asyncio.run(serve(app, sock, **options))
    except StartupFailed as exc:
        logger.error("startup failed: %s", exc)
        return 3
    return 0
