"""``python -m duckserve.inference_server --package DIR [--host H] [--port P] [--port-file F]
[--workers N] [--max-queue Q] [--request-timeout S] [--instance-id I] [--exchange-dir D]``

The package, the address and the port file default to what a runtime passes in the environment
(``$DUCKSERVE_PACKAGE``, ``$DUCKSERVE_HOST``, ``$DUCKSERVE_PORT``, ``$DUCKSERVE_PORT_FILE``,
``$DUCKSERVE_EXCHANGE_DIR``): an image names its package, a runtime the address to listen on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from duckserve.inference_server.app import DEFAULT_MAX_QUEUE, DEFAULT_REQUEST_TIMEOUT, ServerSettings
from duckserve.inference_server.manifest import MANIFEST, Manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m duckserve.inference_server",
        description="Serve a duckserve model package over the service-function protocol.",
    )
    env = os.environ
    parser.add_argument(
        "--package", required="DUCKSERVE_PACKAGE" not in env, type=Path, default=env.get("DUCKSERVE_PACKAGE"),
        help="the model package directory (holds manifest.json; default $DUCKSERVE_PACKAGE)",
    )
    parser.add_argument("--host", default=env.get("DUCKSERVE_HOST", "127.0.0.1"),
                        help="address to listen on (default $DUCKSERVE_HOST, else 127.0.0.1)")
    parser.add_argument("--port", default=int(env.get("DUCKSERVE_PORT") or 0), type=int,
                        help="port to listen on; 0 picks a free one (default $DUCKSERVE_PORT, else 0)")
    parser.add_argument("--port-file", type=Path, default=env.get("DUCKSERVE_PORT_FILE") or None,
                        help="write the port here once listening (default $DUCKSERVE_PORT_FILE)")
    parser.add_argument("--exchange-dir", type=Path, default=env.get("DUCKSERVE_EXCHANGE_DIR") or None,
                        help="a directory shared with callers on this host for batches passed as files "
                             "(default $DUCKSERVE_EXCHANGE_DIR, else a private one the server makes)")
    parser.add_argument(
        "--workers", default=1, type=int, help="worker processes, each with its own model copy"
    )
    parser.add_argument(
        "--max-queue",
        default=DEFAULT_MAX_QUEUE,
        type=int,
        help=f"requests that may wait per worker behind the running one; more get 429 (default {DEFAULT_MAX_QUEUE})",
    )
    parser.add_argument(
        "--request-timeout",
        default=DEFAULT_REQUEST_TIMEOUT,
        type=float,
        help=f"seconds a request may wait and run before a 504 (default {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        help="exit cleanly after this many seconds without an inference request (default: never)",
    )
    parser.add_argument("--instance-id", default="", help="this instance's id, for logs and /ready")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.max_queue < 0:
        parser.error("--max-queue must be 0 or more")
    if args.idle_timeout is not None and args.idle_timeout <= 0:
        parser.error("--idle-timeout must be positive")
    if args.request_timeout <= 0:
        parser.error("--request-timeout must be positive")
    if not (args.package / MANIFEST).is_file():
        parser.error(f"--package {args.package}: no {MANIFEST} there")
    try:
        Manifest.read(args.package)
    except (ValueError, KeyError, TypeError) as exc:
        parser.error(
            f"--package {args.package}: {MANIFEST} is not a valid manifest ({type(exc).__name__}: {exc})"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from duckserve.inference_server.serve import serve

    settings = ServerSettings(
        package=args.package.resolve(),
        max_queue=args.max_queue,
        request_timeout=args.request_timeout,
        instance_id=args.instance_id,
        workers=args.workers,
        idle_timeout=args.idle_timeout,
        exchange_dir=args.exchange_dir,
    )
    return serve(settings, host=args.host, port=args.port, port_file=args.port_file, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
