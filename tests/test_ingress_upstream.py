"""The ingress's client to instances (`fronts.ingress.upstream`) against raw sockets: an instance
that never answers times out when it should, and one that answers is read whole."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from duckserve.fronts.ingress.upstream import Upstream, UpstreamTimeout


def silent_server() -> socket.socket:
    """Accepts connections (the kernel's backlog does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_an_instance_that_never_answers_times_out_on_time() -> None:
    sock = silent_server()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def main() -> tuple[float, float]:
        upstream = Upstream()
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await upstream.request(url, "POST", "/predict", [], b"{}", timeout=0.4)
        first = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):  # and again, after the clock stopped with nothing to watch
            await upstream.request(url, "POST", "/predict", [], b"{}", timeout=0.2)
        upstream.close()
        return first, time.monotonic() - started

    try:
        first, second = asyncio.run(main())
    finally:
        sock.close()
    assert 0.4 <= first < 1.2 and 0.2 <= second < 1.0


def test_an_answer_in_pieces_is_read_whole() -> None:
    sock = silent_server()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def answer() -> None:
        connection, _ = sock.accept()
        connection.recv(65536)
        for piece in (b"HTTP/1.1 200 OK\r\ncontent-", b"length: 5\r\n\r\nhe", b"llo"):
            connection.sendall(piece)
            time.sleep(0.02)
        connection.close()

    thread = threading.Thread(target=answer)
    thread.start()

    async def main() -> bytes:
        upstream = Upstream()
        got = await upstream.request(url, "POST", "/predict", [], b"{}", timeout=5)
        upstream.close()
        return got.body

    try:
        assert asyncio.run(main()) == b"hello"
    finally:
        thread.join()
        sock.close()
