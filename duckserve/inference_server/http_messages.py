"""HTTP/1.1 messages for `httpserver`: the limits a server enforces, parsing a request's head and
a chunked body (raising `ProtocolViolation` with the status to answer), and writing an answer."""

from __future__ import annotations

import json
from dataclasses import dataclass

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
    302: "Found", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout",
    409: "Conflict", 411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"})


@dataclass
class Limits:
    """What one server accepts. Times are seconds."""

    #: a request's body, after any Content-Encoding is undone by the application (413 beyond)
    max_body_bytes: int = 512 * 2**20
    #: the request line and headers together (431 beyond)
    max_head_bytes: int = 64 * 2**10
    #: from a request's first byte to the end of its head (408 beyond)
    head_timeout: float = 10.0
    #: from the end of the head to the end of the body (408 beyond)
    body_timeout: float = 120.0
    #: an idle keep-alive connection is closed after this long
    keep_alive_timeout: float = 30.0
    #: open connections; more are answered 503 and closed
    max_connections: int = 1024
    #: requests answered on one connection before it is closed (a client cannot pin one forever)
    max_requests_per_connection: int = 1_000_000


class ProtocolViolation(Exception):
    """A request the server answers itself, then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "code": status}).encode()


def render_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, close: bool,
                    head_only: bool = False) -> bytes:
    """One whole HTTP/1.1 answer with a Content-Length."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Unknown").encode())]
    for name, value in headers:
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"content-length: %d\r\n" % len(body))
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)


def error_response(status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    headers = [(b"content-type", b"application/json")] + (extra or [])
    return render_response(status, headers, error_body(status, message), close=True)


@dataclass
class RequestHead:
    method: str
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def parse_head(raw: bytes, limits: Limits) -> RequestHead:
    """The request line and headers (without the final blank line); ProtocolViolation when malformed."""
    lines = raw.split(b"\r\n")
    try:
        method_b, target, version_b = lines[0].split(b" ")
    except ValueError:
        raise ProtocolViolation(400, "malformed request line: expected 'METHOD /path HTTP/1.1'") from None
    method = method_b.decode("latin-1")
    if method not in _METHODS:
        if not method_b or not set(method_b) <= _TOKEN_CHARS:
            raise ProtocolViolation(400, "malformed request line: the method is not a token")
        raise ProtocolViolation(501, f"method {method[:20]} is not implemented")
    if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version_b.startswith(b"HTTP/"):
            raise ProtocolViolation(505, "only HTTP/1.1 and HTTP/1.0 are supported")
        raise ProtocolViolation(400, "malformed request line: expected 'METHOD /path HTTP/1.1'")
    if not target or target[0] not in b"/*" and not target.startswith((b"http://", b"https://")):
        raise ProtocolViolation(400, "malformed request target: it must start with /")
    if any(c < 0x21 or c == 0x7F for c in target):
        raise ProtocolViolation(400, "malformed request target: it contains spaces or control characters")
    version = version_b[5:].decode()
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    chunked = False
    connection = b""
    expect_continue = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not set(name) <= _TOKEN_CHARS:
            raise ProtocolViolation(400, "malformed header line (or obsolete line folding)")
        value = value.strip(b" \t")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise ProtocolViolation(400, "a header value contains control characters")
        name = name.lower()
        headers.append((name, value))
        if name == b"content-length":
            if not value.isdigit() or len(value) > 18:
                raise ProtocolViolation(400, "Content-Length must be a non-negative integer")
            length = int(value)
            if content_length is not None and content_length != length:
                raise ProtocolViolation(400, "conflicting Content-Length headers")
            content_length = length
        elif name == b"transfer-encoding":
            codings = [c.strip() for c in value.lower().split(b",")]
            if codings[-1:] != [b"chunked"] or any(c not in (b"chunked", b"identity") for c in codings):
                raise ProtocolViolation(501, "only the chunked transfer coding is supported")
            chunked = True
        elif name == b"connection":
            connection = value.lower()
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise ProtocolViolation(400, "only 'Expect: 100-continue' is understood")
            expect_continue = True
    if chunked and content_length is not None:
        raise ProtocolViolation(400, "a request may not have both Content-Length and Transfer-Encoding")
    if content_length is not None and content_length > limits.max_body_bytes:
        raise ProtocolViolation(413, f"request body of {content_length} bytes is larger than the limit of "
                                     f"{limits.max_body_bytes} bytes")
    if version == "1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection
    return RequestHead(method, target, version, headers, content_length, chunked, keep_alive, expect_continue)


class ChunkedBody:
    """Incremental decoder of a chunked request body."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done = False
        self._need: int | None = None  # bytes of chunk data still expected (plus its CRLF)
        self._trailers = False

    def feed(self, buffer: bytearray) -> None:
        """Consume what can be decoded from ``buffer`` (in place)."""
        while not self.done:
            if self._trailers:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(buffer[:end])
                del buffer[:end + 2]
                if not line:
                    self.done = True
                continue
            if self._need is None:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise ProtocolViolation(400, "malformed chunked body: chunk size line too long")
                    return
                size_text = bytes(buffer[:end]).split(b";")[0].strip()
                del buffer[:end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolViolation(400, "malformed chunked body: bad chunk size") from None
                if size < 0:
                    raise ProtocolViolation(400, "malformed chunked body: bad chunk size")
                if size == 0:
                    self._trailers = True
                    continue
                if self.size + size > self.limit:
                    raise ProtocolViolation(413, f"request body is larger than the limit of {self.limit} bytes")
                self._need = size
            if len(buffer) < self._need + 2:
                return
            if buffer[self._need:self._need + 2] != b"\r\n":
                raise ProtocolViolation(400, "malformed chunked body: chunk data not followed by CRLF")
            self.parts.append(bytes(buffer[:self._need]))
            self.size += self._need
            del buffer[:self._need + 2]
            self._need = None

    def body(self) -> bytes:
        return b"".join(self.parts)
