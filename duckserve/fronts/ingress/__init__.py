"""A service's public HTTP endpoint (Snowflake's ingress), one process per service.

    python -m duckserve.fronts.ingress --home HOME --service DB.SCHEMA.NAME --port 0 --port-file F
        [--host H] [--tls-cert CERT --tls-key KEY] [--max-body-mb N] [--max-connections N]
        [--head-timeout S] [--body-timeout S] [--async-after S]

It speaks Snowflake's service-function protocol (``POST /<method>``, with the external-function
headers, batch ids and 202 polling), MLflow's scoring protocol (``POST /invocations`` and
Databricks' ``POST /serving-endpoints/<service>/invocations``) and the Open Inference Protocol
(``/v2/...``); ``GET /openapi.json`` describes every route. A caller's programmatic access token
must pass and its role must own the service, be ACCOUNTADMIN, or hold ``svc!ALL_ENDPOINTS_USAGE``;
authorization is decided again after any change to the catalog, so grants and revokes take effect
on the next request. Parts: `app` (routes and forwarding), `authorization`, `batches`, `upstream`
(the client to instances), `openapi`; the HTTP server is `duckserve.inference_server.httpserver`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from duckserve.engine.names import ObjectName, normalize
from duckserve.errors import Error, ProgrammingError
from duckserve.fronts.addresses import is_loopback
from duckserve.fronts.ingress.app import ROUTES, IngressApp, instance_urls
from duckserve.inference_server.http_messages import Limits

__all__ = ["ROUTES", "IngressApp", "create_app", "instance_urls", "main", "parse_service_name", "serve"]

log = logging.getLogger("duckserve.ingress")

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


def create_app(home: Path | str, service: ObjectName | str, **options: object) -> IngressApp:
    """The ingress application of one service (an ASGI app)."""
    if isinstance(service, str):
        return IngressApp(home, parse_service_name(service), alias=parse_service_name(service, keep_case=True),
                          **options)  # type: ignore[arg-type]
    return IngressApp(home, service, **options)  # type: ignore[arg-type]


def write_port_file(path: Path | str, port: int) -> None:
    """Announce the port atomically: readers see no file or the whole number, never half of it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, target)


def bind(host: str, port: int) -> socket.socket:
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not cert or not key:
        raise ProgrammingError("TLS needs both --tls-cert and --tls-key (PEM files)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ProgrammingError(f"cannot load the TLS certificate {cert} and key {key}: {exc}") from exc
    return context


def serve(home: Path | str, service: str, host: str = "127.0.0.1", port: int = 0,
          port_file: Path | str | None = None, on_listening: Callable[[int], None] | None = None, *,
          limits: Limits | None = None, tls: ssl.SSLContext | None = None, async_after: float = 20.0) -> None:
    """Run the ingress until SIGTERM/SIGINT; the port is written to ``port_file`` once serving."""
    from duckserve.inference_server import httpserver

    limits = limits or Limits(max_body_bytes=100 * 2**20, max_connections=512)
    app = create_app(home, service, max_body_bytes=limits.max_body_bytes, async_after=async_after)
    sock = bind(host, port)
    bound_port = int(sock.getsockname()[1])
    scheme = "https" if tls is not None else "http"
    if tls is None and not is_loopback(host):
        log.warning("WARNING: the ingress of service %s listens on %s without TLS: tokens and data cross the "
                    "network in clear text. Give --tls-cert and --tls-key, or bind to 127.0.0.1.", app.label, host)

    def started() -> None:
        if port_file is not None:
            write_port_file(port_file, bound_port)
        if on_listening is not None:
            on_listening(bound_port)
        log.info("ingress of service %s listening on %s://%s:%d (body limit %d bytes, %d connections)", app.label,
                 scheme, host, bound_port, limits.max_body_bytes, limits.max_connections)

    asyncio.run(httpserver.serve(app, sock, limits=limits, ssl=tls, on_started=started))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duckserve.fronts.ingress",
                                     description="The public HTTP endpoint of one duckserve service.")
    parser.add_argument("--home", required=True, help="the duckserve home holding catalog.sqlite")
    parser.add_argument("--service", required=True, help="the service, DB.SCHEMA.NAME")
    # a runtime passes the address and the port file in the environment
    parser.add_argument("--host", default=os.environ.get("DUCKSERVE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DUCKSERVE_PORT") or 0),
                        help="0 picks a free port")
    parser.add_argument("--port-file", default=os.environ.get("DUCKSERVE_PORT_FILE") or None,
                        help="where to write the port once listening")
    parser.add_argument("--tls-cert", help="PEM certificate (chain): serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--max-body-mb", type=float, default=100.0, help="largest request body (default 100 MB)")
    parser.add_argument("--max-connections", type=int, default=512, help="open connections (default 512)")
    parser.add_argument("--head-timeout", type=float, default=10.0, help="seconds for a request's head (default 10)")
    parser.add_argument("--body-timeout", type=float, default=60.0, help="seconds for its body (default 60)")
    parser.add_argument("--async-after", type=float, default=20.0,
                        help="seconds before a batch with a Snowflake batch id answers 202 (default 20)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from duckserve.inference_server.httpserver import lean_log_records

    lean_log_records()
    limits = Limits(max_body_bytes=int(args.max_body_mb * 2**20), max_connections=args.max_connections,
                    head_timeout=args.head_timeout, body_timeout=args.body_timeout)
    try:
        parse_service_name(args.service)
        tls = tls_context(args.tls_cert, args.tls_key)
        serve(args.home, args.service, args.host, args.port, args.port_file, limits=limits, tls=tls,
              async_after=args.async_after)
    except Error as exc:
        print(f"ingress: {exc}", file=sys.stderr)
        return 2
    return 0
