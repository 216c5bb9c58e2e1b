"""``duckserve sql``: run SQL from -c, -f or an interactive prompt, printing results as tables."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import pyarrow as pa

from duckserve.errors import Error

MAX_CELL = 60


def _cell(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(table: pa.Table, seconds: float | None = None) -> str:
    """An aligned text table with a row count (and the time, when given)."""
    names = table.column_names
    rows = [[_cell(v) for v in row] for row in zip(*(c.to_pylist() for c in table.columns))] if names else []
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(n.ljust(w) for n, w in zip(names, widths)) + " |", line]
    for row in rows:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    out.append(line)
    count = f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}"
    out.append(count + (f" ({seconds:.3f} s)" if seconds is not None else ""))
    return "\n".join(out)


def write_result(table: pa.Table, fmt: str, out: TextIO, seconds: float | None = None) -> None:
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(table.column_names)
        for row in zip(*(c.to_pylist() for c in table.columns)):
            writer.writerow(["" if v is None else v for v in row])
    elif fmt == "json":
        for record in table.to_pylist():
            out.write(json.dumps(record, default=str) + "\n")
    else:
        out.write(format_table(table, seconds) + "\n")


def run_script(connection: Any, sql: str, fmt: str, out: TextIO) -> bool:
    """Run a script statement by statement; print each result; False after the first error."""
    from duckserve.sql import splitter

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
        if result.table is not None:
            write_result(result.table, fmt, out, result.seconds if fmt == "table" else None)
    return True


def interactive(connection: Any, fmt: str) -> int:
    """A minimal prompt: statements end at ';'. (The full shell is ``duckserve shell``.)"""
    buffer: list[str] = []
    while True:
        try:
            line = input("duckserve> " if not buffer else "       ...> ")
        except EOFError:
            break
        except KeyboardInterrupt:
            buffer = []
            print()
            continue
        if not buffer and line.strip().lower() in ("quit", "exit", "!quit", "!exit", ".quit"):
            break
        buffer.append(line)
        if line.rstrip().endswith(";"):
            run_script(connection, "\n".join(buffer), fmt, sys.stdout)
            buffer = []
    if buffer:
        run_script(connection, "\n".join(buffer), fmt, sys.stdout)
    return 0


def sql_command(args: argparse.Namespace) -> int:
    import duckserve

    try:
        connection = duckserve.connect(args.database, home=args.home, user=args.user, role=args.role,
                                       warehouse=args.warehouse)
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
            return 0 if run_script(connection, script, args.format, sys.stdout) else 1
        if not sys.stdin.isatty():
            return 0 if run_script(connection, sys.stdin.read(), args.format, sys.stdout) else 1
        return interactive(connection, args.format)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="duckserve", description="Snowflake-style model serving over DuckDB")
    commands = parser.add_subparsers(dest="subcommand", required=True)
    sql = commands.add_parser("sql", help="run SQL (-c, -f, piped input, or an interactive prompt)")
    sql.add_argument("database", nargs="?", default=":memory:", help="DuckDB database file (default :memory:)")
    sql.add_argument("-c", "--command", help="SQL to run (several statements separated by ';')")
    sql.add_argument("-f", "--file", help="a .sql file to run")
    sql.add_argument("--home", help="account directory (default $DUCKSERVE_HOME or ~/.duckserve)")
    sql.add_argument("--user")
    sql.add_argument("--role")
    sql.add_argument("--warehouse")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.set_defaults(run=sql_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
