"""Run a statement through plain DuckDB and through duckserve and describe each outcome alike.

An outcome is what a user sees: the error (its PEP 249 class and DuckDB's message), or the
column names and types and the rows, whose ``repr`` carries every value's Python type. PEP 249
asks one thing DuckDB's cursor does not do: a statement that returns no rows (DDL, SET, INSERT...)
has no result set, so duckserve's description is None and fetching raises, where DuckDB shows a
``Success`` or ``Count`` column; the outcome of such a statement is ("no rows", rowcount) on both sides.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

import duckserve

PEP_CLASSES = ("IntegrityError", "DataError", "NotSupportedError", "InternalError", "OperationalError",
               "ProgrammingError", "InterfaceError", "DatabaseError", "Error")

Outcome = tuple[Any, ...]


def pep_class(exc: BaseException) -> str:
    return next(c.__name__ for c in type(exc).__mro__ if c.__name__ in PEP_CLASSES)


def _no_rows(con: duckdb.DuckDBPyConnection, sql: str, description: Any, rowcount: int, rows: list[Any]) -> bool:
    if not description or len(description) != 1:
        return not description
    if (description[0][0], str(description[0][1])) not in (("Success", "BOOLEAN"), ("Count", "BIGINT")):
        return False
    if rowcount >= 0:
        return True
    return not rows and any(k.name == "NOTHING" for k in con.extract_statements(sql)[-1].expected_result_type)


def _columns(description: Any) -> list[tuple[str, str]]:
    return [(d[0], str(d[1])) for d in description]


def duckdb_outcome(con: duckdb.DuckDBPyConnection, sql: str, parameters: Any = None, mode: str = "fetchall") -> Outcome:
    try:
        con.execute(sql) if parameters is None else con.execute(sql, parameters)
        description, rowcount = con.description, con.rowcount
        if mode == "arrow" and description and not _no_rows(con, sql, description, rowcount, [None]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = con.to_arrow_table()
            return ("arrow", _columns(description), table)
        rows = con.fetchall() if description else []
    except duckdb.Error as exc:
        return ("error", pep_class(exc), str(exc))
    if _no_rows(con, sql, description, rowcount, rows):
        return ("no rows", rowcount)
    return ("rows", _columns(description), repr(rows))


def read(cursor: Any, mode: str) -> Any:
    if mode == "fetchall":
        return cursor.fetchall()
    if mode == "fetchone":
        rows = []
        while (row := cursor.fetchone()) is not None:
            rows.append(row)
        return rows
    if mode == "fetchmany":
        rows = []
        while chunk := cursor.fetchmany(2):
            rows.extend(chunk)
        return rows
    if mode == "iterate":
        return list(cursor)
    raise AssertionError(mode)


def duckserve_outcome(conn: Any, sql: str, parameters: Any = None, mode: str = "fetchall",
                      between: Callable[[], Any] | None = None) -> Outcome:
    """``between`` runs after execute and before the fetch (another cursor's statement, say)."""
    cursor = conn.cursor()
    try:
        cursor.execute(sql, parameters)
        if between is not None:
            between()
        if cursor.description is None:
            try:
                cursor.fetchall()
            except duckserve.ProgrammingError:
                return ("no rows", cursor.rowcount)
            raise AssertionError(f"fetchall after a statement without rows did not raise: {sql}")
        if mode == "arrow":
            return ("arrow", _columns(cursor.description), cursor.fetch_arrow_table())
        rows = read(cursor, mode)
    except duckserve.Error as exc:
        return ("error", pep_class(exc), str(exc))
    return ("rows", _columns(cursor.description), repr(rows))


def same_arrow(a: pa.Table, b: pa.Table) -> bool:
    """Same schema (with metadata) and the same values; NaN equals NaN."""
    if not a.schema.equals(b.schema, check_metadata=True) or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        if a[name].equals(b[name]):
            continue
        try:
            if repr(a[name].to_pylist()) != repr(b[name].to_pylist()):
                return False
        except (OverflowError, ValueError):  # values Python cannot hold (DuckDB's infinity dates)
            return False
    return True


def same(expected: Outcome, got: Outcome) -> bool:
    if expected[0] == "arrow" and got[0] == "arrow":
        return bool(expected[1] == got[1] and same_arrow(expected[2], got[2]))
    return expected == got


def describe(outcome: Outcome) -> str:
    if outcome[0] == "arrow":
        table: pa.Table = outcome[2]
        return f"arrow {outcome[1]} {table.schema} {table}"[:3000]
    return repr(outcome)[:3000]
