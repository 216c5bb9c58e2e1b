"""The ingress's HTTP/1.1 client to a service's instances: keep-alive connections per instance,
one request at a time on each, answers read whole (Content-Length, chunked or until close).

A general client (httpx) spent more CPU per one-row request than the instance did; this one writes
a request with one ``transport.write`` and parses the answer's head with a few ``bytes`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import urlsplit


class UpstreamError(Exception):
    """The instance could not be reached, or broke the connection before answering.
    ``sent`` is False when nothing of the request can have been processed (safe to send elsewhere)."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class UpstreamTimeout(Exception):
    """The instance did not answer in time."""


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.head: tuple[int, dict[bytes, bytes]] | None = None
        self.received = False
        self.keep_alive = True
        self.for_head = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.head is not None and self._close_delimited():
                self._finish(bytes(self.buffer))
                return
            self.waiter.set_exception(UpstreamError("the instance closed the connection", sent=self.received))

    def _close_delimited(self) -> bool:
        assert self.head is not None
        headers = self.head[1]
        return b"content-length" not in headers and b"chunked" not in headers.get(b"transfer-encoding", b"")

    def send(self, data: bytes, head_only: bool = False) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.buffer.clear()
        self.head = None
        self.received = False
        self.for_head = head_only
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            self._parse()
        except UpstreamError as exc:
            self.waiter.set_exception(exc)
            self.keep_alive = False
            if self.transport is not None:
                self.transport.close()

    def _parse(self) -> None:
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 256 * 1024:
                    raise UpstreamError("the instance's answer head is too large", sent=True)
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            del self.buffer[:end + 4]
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise UpstreamError("the instance sent a malformed status line", sent=True)
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            status = int(parts[1])
            if status == 100:
                self._parse()
                return
            self.head = (status, headers)
            if headers.get(b"connection", b"").lower() == b"close" or parts[0] == b"HTTP/1.0":
                self.keep_alive = False
        status, headers = self.head
        if self.for_head or status in (204, 304):
            self._finish(b"")
            return
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = self._chunked()
            if body is not None:
                self._finish(body)
            return
        length = headers.get(b"content-length")
        if length is None:
            self.keep_alive = False
            if len(self.buffer) > self.max_body:
                raise UpstreamError("the instance's answer is larger than the limit", sent=True)
            return  # until the connection closes
        if not length.isdigit():
            raise UpstreamError("the instance sent a malformed Content-Length", sent=True)
        size = int(length)
        if size > self.max_body:
            raise UpstreamError("the instance's answer is larger than the limit", sent=True)
        if len(self.buffer) >= size:
            body = bytes(self.buffer[:size])
            del self.buffer[:size]
            self._finish(body)

    def _chunked(self) -> bytes | None:
        parts: list[bytes] = []
        position = 0
        data = self.buffer
        while True:
            end = data.find(b"\r\n", position)
            if end < 0:
                return None
            try:
                size = int(bytes(data[position:end]).split(b";")[0], 16)
            except ValueError:
                raise UpstreamError("the instance sent a malformed chunked answer", sent=True) from None
            start = end + 2
            if size == 0:
                trailer_end = data.find(b"\r\n\r\n", end)
                if data[start:start + 2] == b"\r\n":
                    del data[:start + 2]
                elif trailer_end >= 0:
                    del data[:trailer_end + 4]
                else:
                    return None
                return b"".join(parts)
            if len(data) < start + size + 2:
                return None
            parts.append(bytes(data[start:start + size]))
            position = start + size + 2

    def _finish(self, body: bytes) -> None:
        assert self.head is not None and self.waiter is not None
        status, headers = self.head
        self.waiter.set_result(Answer(status, headers, body))


#: how often answers past their deadline are expired (the timeout's precision)
CLOCK_SECONDS = 0.25


class Upstream:
    """Keep-alive connections to instances, by base URL. One clock expires the answers that are
    late (a timer per request was a heap push and a cancellation on every one-row call)."""

    def __init__(self, max_idle_per_instance: int = 64, max_body: int = 1 << 31, connect_timeout: float = 5.0) -> None:
        self.max_idle = max_idle_per_instance
        self.max_body = max_body
        self.connect_timeout = connect_timeout
        self.idle: dict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self._deadlines: dict[asyncio.Future[Answer], float] = {}
        self._clock: asyncio.TimerHandle | None = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for future in [f for f, deadline in self._deadlines.items() if deadline <= now]:
            del self._deadlines[future]
            if not future.done():
                future.set_exception(UpstreamTimeout())
        self._clock = loop.call_later(CLOCK_SECONDS, self._tick) if self._deadlines else None

    @staticmethod
    def address(base_url: str) -> tuple[str, int]:
        parts = urlsplit(base_url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    async def _connect(self, address: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self.max_body), *address), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"cannot connect ({type(exc).__name__})", sent=False) from exc
        return connection

    async def request(self, base_url: str, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes,
                      timeout: float) -> Answer:
        address = self.address(base_url)
        head = [b"%s %s HTTP/1.1\r\nhost: %s:%d\r\n" % (method.encode(), path.encode("latin-1"),
                                                        address[0].encode(), address[1])]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        data = b"".join(head) + body
        for attempt in range(2):
            pool = self.idle[address]
            while pool and pool[-1].closed:
                pool.pop()
            reused = bool(pool)
            connection = pool.pop() if reused else await self._connect(address)
            future = connection.send(data, head_only=method == "HEAD")
            loop = asyncio.get_running_loop()
            self._deadlines[future] = loop.time() + timeout
            if self._clock is None:
                self._clock = loop.call_later(CLOCK_SECONDS, self._tick)
            try:
                answer = await future
            except UpstreamTimeout:
                connection.keep_alive = False
                if connection.transport is not None:
                    connection.transport.close()
                raise
            except UpstreamError as exc:
                if reused and not exc.sent and attempt == 0:
                    continue  # an idle connection the instance had closed: once more on a fresh one
                raise
            finally:
                self._deadlines.pop(future, None)
            if connection.keep_alive and not connection.closed and len(pool) < self.max_idle:
                pool.append(connection)
            elif connection.transport is not None:
                connection.transport.close()
            return answer
        raise UpstreamError("the instance closed the connection", sent=False)

    def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        for pool in self.idle.values():
            for connection in pool:
                if connection.transport is not None:
                    connection.transport.close()
        self.idle.clear()
