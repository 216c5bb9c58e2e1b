"""``duckserve ui``: serve the console for an account home and print where to open it."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from duckserve import errors

DEFAULT_PORT = 7480


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="account directory (default $DUCKSERVE_HOME or ~/.duckserve)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; local sign-in works from this machine only)")
    parser.add_argument("--database", default=":memory:",
                        help="DuckDB database file the worksheet and service functions use (default :memory:)")
    parser.add_argument("--user", help="the user the printed link signs in as (default ADMIN)")
    parser.add_argument("--port-file", help="write the port listened on to this file once serving (for scripts)")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise errors.OperationalError(f"cannot listen on {host}:{port}: {exc.strerror}; "
                                      "choose another with --port (0 picks a free one)") from exc
    sock.listen(128)
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def allowed_hosts(host: str) -> list[str]:
    names = {"127.0.0.1", "localhost", "::1", "[::1]"}
    if host not in ("0.0.0.0", "::"):
        names.add(host)
    else:
        names = {"*"}   # listening everywhere: any Host the machine is reached by
    return sorted(names)


def command(args: argparse.Namespace) -> int:
    import uvicorn

    from duckserve.fronts.console.app import create_app
    from duckserve.fronts.console.sessions import Console

    try:
        console = Console(args.home, args.database, local_user=args.user)
        sock = _listen(args.host, args.port)
    except errors.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    base = f"http://{_url_host(args.host)}:{port}/"
    app = create_app(console, allowed_hosts(args.host))
    user = args.user.upper() if args.user else "ADMIN"
    print(f"duckserve console for the account in {console.home}", flush=True)
    print(f"  open {base}?key={console.local_key}", flush=True)
    print(f"       (signs you in as {user} on this machine; anyone can sign in at {base} with a programmatic "
          "access token)", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    config: Any = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    if args.port_file:
        with open(args.port_file, "w", encoding="utf-8") as handle:
            handle.write(str(port))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0
