"""``duckserve server``: the Snowflake-protocol server on uvicorn.

    duckserve server [--host 127.0.0.1] [--port 8765] [--database FILE] [--home DIR] [--port-file F]

It listens on loopback unless ``--host`` says otherwise. Another address exposes the account to
whoever reaches it: every login needs a programmatic access token or a key-pair JWT, but the
traffic is plain HTTP (tokens and data travel unencrypted), so bind elsewhere only on a trusted
network or behind a TLS-terminating proxy.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from duckserve.fronts.addresses import is_loopback

DEFAULT_PORT = 8765


def serve(host: str, port: int, database: str, home: str | None, port_file: str | None = None,
          log_level: str = "warning") -> None:
    import uvicorn

    from duckserve.fronts.snowflake.app import create_app

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    if not is_loopback(host):
        print(f"warning: duckserve's Snowflake server listens on {host}:{bound}, beyond this machine. Logins need "
              "a token or key pair, but the traffic is unencrypted HTTP: use a trusted network or a TLS proxy.",
              file=sys.stderr)
    if port_file:
        tmp = Path(port_file).with_suffix(".tmp")
        tmp.write_text(str(bound))
        os.replace(tmp, port_file)
    print(f"duckserve Snowflake server on http://{host}:{bound} (database {database}, home "
          f"{home or os.environ.get('DUCKSERVE_HOME') or '~/.duckserve'})", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(database, home), log_level=log_level, access_log=False,
                            timeout_keep_alive=60)
    uvicorn.Server(config).run(sockets=[sock])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else is reachable from the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks one)")
    parser.add_argument("--database", default=":memory:", help="DuckDB database file (default :memory:)")
    parser.add_argument("--home", help="account directory (default $DUCKSERVE_HOME or ~/.duckserve)")
    parser.add_argument("--port-file", help="write the port listened on to this file (for scripts and tests)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        serve(args.host, args.port, args.database, args.home, args.port_file, args.log_level)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duckserve.fronts.snowflake.server")
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
