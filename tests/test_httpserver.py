"""duckserve's HTTP/1.1 server (`inference_server.httpserver`) on its own, with raw sockets: pipelined
requests on one connection are all answered, in order, whether they arrive in one read, while an
earlier one is being processed, chunked, or behind a half-closed connection."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from duckserve.inference_server import httpserver
from duckserve.inference_server.http_messages import Limits


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the body's length and the path; ``/slow`` takes 50 ms, on the event loop's time."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    message = await receive()
    if scope["path"] == "/slow":
        await asyncio.sleep(0.05)
    body = json.dumps({"path": scope["path"], "length": len(message["body"])}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        await httpserver.serve(echo, sock, limits=Limits(keep_alive_timeout=20, head_timeout=20),
                               on_started=started.set, stop=stop, handle_signals=False)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield int(sock.getsockname()[1])
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    sock.close()


def request(path: str, body: bytes = b"", extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: x\r\n{extra}content-length: {len(body)}\r\n\r\n".encode() + body


def chunked(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    return head + b"%x\r\n%s\r\n" % (3, body[:3]) + b"%x\r\n%s\r\n" % (len(body) - 3, body[3:]) + b"0\r\n\r\n"


def answers(data: bytes) -> list[dict[str, Any]]:
    """Every whole answer in ``data`` (Content-Length framed), in order."""
    found = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if " 100 " in lines[0]:
            data = rest
            continue
        assert lines[0].startswith("HTTP/1.1 200"), lines[0]
        length = int(next(v for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length"))
        assert len(rest) >= length, "a partial answer"
        found.append(json.loads(rest[:length]))
        data = rest[length:]
    assert not data
    return found


def read_all(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    """Read until ``count`` answers are in (or the server closes), then parse them."""
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            parsed = answers(data)
        except AssertionError:
            parsed = []
        if len(parsed) >= count:
            return parsed
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return answers(data)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_pipelined_requests_in_one_read_are_all_answered_in_order(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(request("/slow", b"a" * 5) + chunked("/b", b"bbbbbbb") + request("/c", b"c" * 9))
        time.sleep(0.3)  # every answer is written before the client reads one: they arrive together
        got = read_all(sock, 3)
    assert got == [{"path": "/slow", "length": 5}, {"path": "/b", "length": 7}, {"path": "/c", "length": 9}]


def test_a_request_arriving_while_the_previous_one_runs_is_answered(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(request("/slow", b"x"))
        time.sleep(0.01)  # the first is running on the server
        second = request("/after", b"yy", "expect: 100-continue\r\n")
        sock.sendall(second[:10])
        time.sleep(0.01)
        sock.sendall(second[10:])
        assert read_all(sock, 2) == [{"path": "/slow", "length": 1}, {"path": "/after", "length": 2}]


def test_pipelined_requests_then_a_half_close_are_answered_then_closed(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(request("/slow", b"1") + request("/slow", b"22") + request("/z", b"333"))
        sock.shutdown(socket.SHUT_WR)  # the client has nothing more to send
        data = b""
        while chunk := sock.recv(65536):  # the server must close once the last answer is out
            data += chunk
    assert answers(data) == [{"path": "/slow", "length": 1}, {"path": "/slow", "length": 2},
                             {"path": "/z", "length": 3}]


def test_many_pipelined_requests_split_at_every_byte_boundary(port: int) -> None:
    stream = b"".join(request(f"/r{i}", b"q" * i) if i % 2 else chunked(f"/r{i}", b"q" * (i + 4)) for i in range(6))
    with connect(port) as sock:
        for start in range(0, len(stream), 7):  # heads and bodies cut anywhere
            sock.sendall(stream[start:start + 7])
        got = read_all(sock, 6)
    assert got == [{"path": f"/r{i}", "length": i if i % 2 else i + 4} for i in range(6)]
