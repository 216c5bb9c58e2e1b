"""The ``duckserve`` command: ``sql`` (run SQL from -c, -f, a pipe, or the shell on a terminal),
``shell`` (the interactive shell), ``server``, ``ui`` and ``manifests``. dbt projects run under
dbt itself, through the ``type: duckserve`` adapter (dbt-duckserve/)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

import pyarrow as pa

from duckserve.errors import Error

if TYPE_CHECKING:
    from duckserve.sql import formatting

MAX_CELL = 60


def format_table(table: pa.Table, seconds: float | None = None) -> str:
    """An aligned text table with a row count (and the time, when given)."""
    from duckserve.sql import formatting

    return formatting.format_table(table, formatting.FormatOptions(max_cell_width=MAX_CELL), seconds)


def write_result(table: formatting.Printable, fmt: str, out: TextIO, seconds: float | None = None) -> None:
    from duckserve.sql import formatting

    text = formatting.render(table, fmt, formatting.FormatOptions(max_cell_width=MAX_CELL), seconds)
    if text:
        out.write(text + "\n")


def run_script(connection: Any, sql: str, fmt: str, out: TextIO) -> bool:
    """Run a script statement by statement; print each result; False after the first error."""
    from duckserve.sql import formatting, splitter

    try:
        statements = splitter.split(sql)
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    for statement in statements:
        try:
            result = connection.run_statement(statement)
        except Error as exc:
            print(f"error: {exc}", file=sys.stderr)
            return False
        if result.has_rows:
            assert result.description is not None
            write_result(formatting.Grid.of(result.description, result.fetchall()), fmt, out,
                         result.seconds if fmt == "table" else None)
    return True


def _connect(args: argparse.Namespace) -> Any:
    import duckserve

    return duckserve.connect(args.database, home=args.home, user=args.user, role=args.role,
                             warehouse=args.warehouse, python_variables=False)


def _shell(connection: Any, args: argparse.Namespace, interactive: bool | None) -> int:
    from duckserve.sql.shell import run_shell

    try:
        return run_shell(connection, output_format=args.format, options=args.option, history_file=args.history,
                         interactive=interactive)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def sql_command(args: argparse.Namespace) -> int:
    try:
        connection = _connect(args)
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with connection:
        if args.command is not None:
            return 0 if run_script(connection, args.command, args.format, sys.stdout) else 1
        if args.file is not None:
            try:
                with open(args.file, encoding="utf-8") as handle:
                    script = handle.read()
            except OSError as exc:
                print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
                return 1
            return _run_file(connection, script, args)
        return _shell(connection, args, None)


def _run_file(connection: Any, script: str, args: argparse.Namespace) -> int:
    """A file of statements and !commands, as the shell runs it, stopping at the first error."""
    from duckserve.sql.shell import Shell, StopShell

    shell = Shell(connection, interactive=False)
    shell.settings.output_format = args.format
    try:
        for option in args.option:
            shell.settings.set(*option.partition("=")[::2])
        return 0 if shell.run_text(script, origin=args.file) and not shell.failed else 1
    except StopShell as stop:
        return stop.code
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def manifests_command(args: argparse.Namespace) -> int:
    """Write a service's Kubernetes manifests (SYSTEM$GET_SERVICE_MANIFESTS) to stdout or a file."""
    import duckserve

    quoted = "'" + args.service.replace("'", "''") + "'"
    try:
        with duckserve.connect(home=args.home, user=args.user, role=args.role, warehouse=args.warehouse,
                               python_variables=False) as connection:
            row = connection.execute(f"CALL SYSTEM$GET_SERVICE_MANIFESTS({quoted})").fetchone()
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = str(row[0]) if row else ""
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    import yaml

    print(f"wrote {sum(1 for _ in yaml.safe_load_all(text))} Kubernetes objects of service {args.service} to {args.output} "
          f"(kubectl apply -f {args.output})")
    return 0


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="account directory (default $DUCKSERVE_HOME or ~/.duckserve)")
    parser.add_argument("--user")
    parser.add_argument("--role")
    parser.add_argument("--warehouse")


def _shell_options(parser: argparse.ArgumentParser) -> None:
    from duckserve.sql.formatting import FORMATS

    parser.add_argument("--format", choices=FORMATS, default="table", help="how results print (default table)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a shell option, as !set takes it (e.g. -o timing=false); repeatable")
    parser.add_argument("--history", metavar="FILE",
                        help="history file (default $DUCKSERVE_HISTORY, else shell_history in the account home)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="duckserve", description="Snowflake-style model serving over DuckDB")
    commands = parser.add_subparsers(dest="subcommand", required=True)
    sql = commands.add_parser("sql", help="run SQL (-c, -f, piped input, or the shell on a terminal)")
    sql.add_argument("database", nargs="?", default=":memory:", help="DuckDB database file (default :memory:)")
    sql.add_argument("-c", "--command", help="SQL to run (several statements separated by ';')")
    sql.add_argument("-f", "--file", help="a .sql file to run (statements and !commands)")
    _connection_options(sql)
    _shell_options(sql)
    sql.set_defaults(run=sql_command)

    shell = commands.add_parser("shell", help="the interactive SQL shell (plain results when input is piped)")
    shell.add_argument("database", nargs="?", default=":memory:", help="DuckDB database file (default :memory:)")
    _connection_options(shell)
    _shell_options(shell)
    shell.set_defaults(run=sql_command, command=None, file=None)  # `sql` without -c or -f

    server = commands.add_parser("server", help="serve Snowflake's protocol, for Snowflake's drivers and tools")
    from duckserve.fronts.snowflake import server as snowflake_server

    snowflake_server.add_arguments(server)
    server.set_defaults(run=snowflake_server.command)

    console = commands.add_parser("ui", help="serve the web console for an account home and print its URL")
    from duckserve.fronts.console import server as console_server

    console_server.add_arguments(console)
    console.set_defaults(run=console_server.command)

    manifests = commands.add_parser("manifests", help="write a service's Kubernetes manifests (Deployment, Service, "
                                                      "HorizontalPodAutoscaler, PodDisruptionBudget, Ingress)")
    manifests.add_argument("service", metavar="SERVICE", help="the service's name, as SQL writes it")
    manifests.add_argument("-o", "--output", help="file to write (default: standard output)")
    _connection_options(manifests)
    manifests.set_defaults(run=manifests_command)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
