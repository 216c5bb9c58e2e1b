"""Differential tests: the same statements through plain DuckDB and through duckserve.connect,
with identical outcomes (values and their Python types, Arrow, errors, catalogs) asserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

import duckserve
from tests.differential import describe, duckdb_outcome, duckserve_outcome, same

#: a value of every DuckDB type (the data types page of DuckDB's documentation), edge values, NULLs, nesting
VALUES = [
    "true", "NULL::BOOLEAN", "(-128)::TINYINT", "255::UTINYINT", "(-32768)::SMALLINT", "65535::USMALLINT",
    "(-2147483648)::INTEGER", "4294967295::UINTEGER", "(-9223372036854775808)::BIGINT", "18446744073709551615::UBIGINT",
    "(-170141183460469231731687303715884105727)::HUGEINT", "170141183460469231731687303715884105727::HUGEINT",
    "340282366920938463463374607431768211455::UHUGEINT", "0::UHUGEINT", "NULL::HUGEINT",
    "1.5::FLOAT", "'nan'::FLOAT", "'-inf'::DOUBLE", "(-0.0)::DOUBLE", "1e308::DOUBLE", "1.5::DECIMAL(4,1)",
    "123456789012345.678::DECIMAL(18,3)", "1234567890123456789012345678.0123456789::DECIMAL(38,10)",
    "'duck'", "''", "'ünïcödé 🦆'", "NULL::VARCHAR", "'\\xAA\\x00'::BLOB", "''::BLOB", "'0101'::BIT", "NULL::BIT",
    "12345678901234567890123456789012345678901234567890::BIGNUM", "(-1)::BIGNUM",
    "DATE '2024-02-29'", "'infinity'::DATE", "'-infinity'::DATE", "DATE '0001-01-01'",
    "TIME '23:59:59.999999'", "'24:00:00'::TIME", "TIME_NS '12:00:00.123456789'",
    "TIMETZ '10:00:00+03'", "TIMETZ '23:59:59-15:59'", "NULL::TIMETZ",
    "TIMESTAMP '2024-01-01 12:34:56.789'", "'infinity'::TIMESTAMP", "'-infinity'::TIMESTAMP",
    "TIMESTAMP_S '2024-01-01 12:34:56'", "TIMESTAMP_MS '2024-01-01 12:34:56.789'",
    "TIMESTAMP_NS '2024-01-01 12:34:56.123456789'", "TIMESTAMPTZ '2024-01-01 12:34:56+05'",
    "'infinity'::TIMESTAMPTZ",
    "INTERVAL 1 MONTH", "INTERVAL '1 year 2 months 3 days 04:05:06.789'", "INTERVAL (-3) DAY", "NULL::INTERVAL",
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID", "NULL::UUID", "'{\"a\": [1, 2.5, null]}'::JSON",
    "'sad'::ENUM('sad', 'ok', 'happy')", "[1, 2, NULL]", "[]::INTEGER[]", "[[1], [2, 3]]", "[1, 2, 3]::INTEGER[3]",
    "[[1.5, 2.5], [3.5, 4.5]]::DOUBLE[2][2]", "{'a': 1, 'b': 'x', 'c': NULL}", "{'x': {'y': [TIMETZ '01:02:03+01']}}",
    "MAP {'k': 1, 'l': NULL}", "MAP {1: [UUID 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']}", "MAP {}::MAP(INTEGER, VARCHAR)",
    "union_value(n := 1)::UNION(n INTEGER, s VARCHAR)", "union_value(s := 'x')::UNION(n INTEGER, s VARCHAR)",
    "1::VARIANT", "'text'::VARIANT", "[1::HUGEINT, NULL]", "{'u': 1::UHUGEINT, 'b': '1'::BIT}",
    "[INTERVAL 1 MONTH, INTERVAL 2 DAYS]", "NULL",
]

FETCH_MODES = ["fetchall", "fetchone", "fetchmany", "iterate"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[duckdb.DuckDBPyConnection, Any]]:
    plain = duckdb.connect()
    served = duckserve.connect(home=str(tmp_path_factory.mktemp("home")))
    yield plain, served
    served.close()
    plain.close()


def check(plain: duckdb.DuckDBPyConnection, served: Any, sql: str, parameters: Any = None, mode: str = "fetchall",
          between: Any = None) -> None:
    expected = duckdb_outcome(plain, sql, parameters, "arrow" if mode == "arrow" else "fetchall")
    got = duckserve_outcome(served, sql, parameters, mode, between)
    assert same(expected, got), f"{sql!r} ({mode})\n  duckdb:    {describe(expected)}\n  duckserve: {describe(got)}"


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("mode", [*FETCH_MODES, "arrow"])
def test_every_type_reads_as_duckdb_reads_it(pair: Any, value: str, mode: str) -> None:
    plain, served = pair
    check(plain, served, f"SELECT {value} AS v, {value} IS NULL AS is_null", mode=mode)


@pytest.mark.parametrize("mode", ["fetchall", "arrow"])
def test_test_all_types(pair: Any, mode: str) -> None:
    """DuckDB's own table of every type at its minimum, maximum and NULL."""
    plain, served = pair
    check(plain, served, "SELECT * EXCLUDE (dec38_10) FROM test_all_types()", mode=mode)


@pytest.mark.parametrize("mode", ["fetchall", "fetchone", "arrow"])
def test_rows_put_aside_when_another_cursor_runs(pair: Any, mode: str) -> None:
    """A cursor's unread rows survive another cursor's statement unchanged, in every form."""
    plain, served = pair
    # unread rows go aside as Arrow, unless a column's values do not survive Arrow (HUGEINT...): then as
    # Python values, which lose nanoseconds, months and UNION members (test_put_aside_rows_that_python_cannot_hold)
    python_lossy = ("_ns", "interval", "union", "tuple", "empty_struct", "TIMESTAMP_NS", "TIME_NS", "INTERVAL",
                    "UNION", "date", "timestamp", "infinity", "DATE", "TIMESTAMP")
    arrow_lossy = ("hugeint", "bit", "uuid", "time_tz", "HUGEINT", "BIT", "UUID", "TIMETZ")
    columns = [c for c in plain.execute("DESCRIBE SELECT * FROM test_all_types()").fetchall()]
    names = [c[0] for c in columns if c[0] != "dec38_10"
             and not (mode == "arrow" and any(w in c[0] for w in python_lossy))]
    values = [v for v in VALUES if not (mode == "arrow" and any(w in v for w in python_lossy))]
    sql = f"SELECT {', '.join(chr(34) + n + chr(34) for n in names)} FROM test_all_types()"
    exact = [v for v in VALUES if not any(w in v for w in arrow_lossy)]
    for query in (sql, "SELECT " + ", ".join(f"{v} AS c{i}" for i, v in enumerate(values)) + " FROM range(3)",
                  "SELECT " + ", ".join(f"{v} AS c{i}" for i, v in enumerate(exact)) + " FROM range(3)"):
        check(plain, served, query, mode=mode, between=lambda: served.cursor().execute("SELECT 42").fetchall())


def test_result_scan_gives_back_exact_values(pair: Any) -> None:
    plain, served = pair
    for mode in ("fetchall", "arrow", "fetchone"):
        # Arrow does not hold HUGEINT, UHUGEINT, BIT, UUID or TIMETZ exactly; an ENUM reads back as VARCHAR
        values = ", ".join(f"{v} AS c{i}" for i, v in enumerate(VALUES) if "ENUM" not in v and not (
            mode == "arrow" and any(w in v for w in ("HUGEINT", "BIT", "UUID", "TIMETZ"))))
        sql = f"SELECT {values} FROM range(3)"
        cursor = served.cursor()
        cursor.execute(sql)
        if mode == "fetchall":
            cursor.fetchall()
        elif mode == "arrow":
            cursor.fetch_arrow_table()
        else:
            cursor.fetchone()  # the rest is read for RESULT_SCAN when the next statement runs
        scanned = served.cursor().execute("SELECT * FROM RESULT_SCAN(LAST_QUERY_ID())").fetchall()
        assert repr(scanned) == repr(plain.execute(sql).fetchall()), mode


@pytest.mark.parametrize("sql, parameters", [
    ("SELECT ?", [1]), ("SELECT ?, ?", ["a", None]), ("SELECT $1 + $2", [1, 2]), ("SELECT $1+$2", [40, 2]),
    ("SELECT $a || $b", {"a": "x", "b": "y"}), ("SELECT ?::HUGEINT", [2**100]), ("SELECT ?", [[1, {"a": 2}]]),
    ("SELECT ?::UUID", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]), ("SELECT ?", [b"\x00\x01"]),
    ("SELECT ? + 1", ["x"]), ("SELECT ?", [1, 2]), ("SELECT 1; SELECT ?", [5]),
])
def test_parameters(pair: Any, sql: str, parameters: Any) -> None:
    plain, served = pair
    check(plain, served, sql, parameters)


@pytest.mark.parametrize("sql", [
    "SELECT current_query()", "SELECT current_query();", "  SELECT current_query() ;  -- trailing comment",
    "-- a comment; with a semicolon\nSELECT current_query()", "/* block */ SELECT current_query() /* after */",
    "SELECT 1; SELECT current_query();", "SELECT 1;; ;SELECT current_query()", "SELECT ';' AS s, current_query()",
    "SELECT $$a;b$$ AS d", "SELECT $tag$x;y$tag$ AS d, current_query()", 'SELECT 1 AS "x;y"',
    "SELECT 1 -- comment at the end", "SELECT 'show tables' AS s", "SELECT 1 AS end_, 2 AS desc_",
    "SELECT CASE WHEN 1 = 1 THEN 'a' END, current_query()", "SELECT 1 != 2, 3 <> 4, 5 ! = 5 IS NULL",
    "SELECT 1; SELECT 2 AS two; SELECT current_query() AS q",
])
def test_statement_text_reaches_duckdb_as_written(pair: Any, sql: str) -> None:
    plain, served = pair
    check(plain, served, sql)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM nosuch", "SELEC 1", "SELECT 1 +", "SELECT 'abc'::INTEGER", "SELECT 1000::TINYINT",
    "SELECT nosuch_function(1)", "SELECT [1, 2][1:'x']", "SELECT 1; SELECT * FROM nosuch",
    "SELECT * FROM nosuch; SELECT 1", "COMMIT", "SELECT (SELECT * FROM range(2))", "SELECT 1/0, 1//0",
    "SELECT error('custom failure')", "SELECT * FROM read_csv('/nonexistent/file.csv')", "PREPARE",
    "SELECT $nosuch_variable", "EXECUTE nosuch_prepared", "SELECT ?",
])
def test_error_texts(pair: Any, sql: str) -> None:
    plain, served = pair
    check(plain, served, sql)


SCENARIOS = {
    "tables, DML and catalog functions after queries": [
        "CREATE TABLE t (i INTEGER PRIMARY KEY, s VARCHAR)", "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO t VALUES (1, 'dup')", "UPDATE t SET s = 'z' WHERE i = 2", "DELETE FROM t WHERE i = 1",
        "INSERT INTO t VALUES (3, 'c') RETURNING *", "SELECT 42", "SELECT * FROM (VALUES (1)) v(x)",
        "SHOW TABLES", "SHOW ALL TABLES", "DESCRIBE t", "SHOW t", "SUMMARIZE t",
        "SELECT database_name, schema_name, view_name FROM duckdb_views() WHERE NOT internal",
        "SELECT table_name FROM information_schema.tables ORDER BY 1", "SELECT table_name FROM duckdb_tables()",
        "SELECT relname FROM pg_catalog.pg_class WHERE relname NOT LIKE 'duckdb_%' ORDER BY 1",
        "SELECT count(*) FROM duckdb_functions() WHERE function_name LIKE '%duckserve%'",
        "SELECT database_name FROM duckdb_databases() ORDER BY 1", "CREATE VIEW v AS SELECT * FROM t",
        "SELECT * FROM v", "DROP VIEW v", "CREATE TABLE t2 AS SELECT * FROM t", "SELECT count(*) FROM t2",
        "PRAGMA table_info('t')", "CALL pragma_version()", "EXPLAIN SELECT * FROM t", "CHECKPOINT",
    ],
    "transactions with ATTACH and USE": [
        "ATTACH ':memory:' AS database", "USE database", "CREATE TABLE items (id INTEGER)",
        "BEGIN TRANSACTION", "INSERT INTO items VALUES (1)", "ROLLBACK", "SELECT count(*) FROM items",
        "BEGIN", "INSERT INTO items VALUES (2)", "COMMIT", "SELECT * FROM items", "SELECT current_database()",
        "BEGIN", "USE memory", "ROLLBACK", "SELECT current_database()", "USE memory", "USE database.main",
        "SELECT current_database(), current_schema()", "USE memory", "DETACH database",
        "ATTACH ':memory:' AS role", "USE role", "SELECT current_database()", "USE memory", "DETACH role",
        "BEGIN", "SELECT * FROM nosuch", "SELECT 1", "ROLLBACK", "SELECT 1",
    ],
    "PREPARE and EXECUTE": [
        "PREPARE p AS SELECT $1+$2", "EXECUTE p(1, 2)", "PREPARE q AS SELECT ?::INTEGER * 2 AS doubled",
        "EXECUTE q(21)", "PREPARE n AS SELECT $name || '!'", "EXECUTE n(name := 'duck')", "DEALLOCATE p",
        "EXECUTE p(1, 2)",
    ],
    "variables": [
        "SET VARIABLE animal = 'duck'", "SELECT $animal", "SELECT getvariable('animal')",
        "SET VARIABLE n = 40 + 2", "SELECT $n + 1", "RESET VARIABLE animal", "SELECT getvariable('animal')",
        "SET threads = 1", "SELECT current_setting('threads')", "RESET threads",
    ],
    "names shared with duckserve's statements": [
        "CREATE TABLE role (database INTEGER, warehouse VARCHAR)", "INSERT INTO role VALUES (1, 'w')",
        "SELECT database, warehouse FROM role", "CREATE TABLE users (name VARCHAR)", "SHOW users", "DESCRIBE users",
        "CREATE VIEW models AS SELECT 1 AS model", "SHOW models", "DESCRIBE models", "CREATE SCHEMA service",
        "CREATE TABLE service.model (x INTEGER)", "SELECT * FROM service.model", "DROP TABLE service.model",
        "CREATE TABLE grants (g INTEGER)", "SHOW grants", "SHOW DATABASES", "DROP TABLE users",
    ],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenarios(scenario: str, tmp_path: Path) -> None:
    # the same file name in two folders: DuckDB names a database after its file
    (tmp_path / "plain").mkdir()
    (tmp_path / "served").mkdir()
    plain = duckdb.connect(str(tmp_path / "plain" / "shop.duckdb"))
    served = duckserve.connect(str(tmp_path / "served" / "shop.duckdb"), home=str(tmp_path / "home"))
    try:
        for sql in SCENARIOS[scenario]:
            check(plain, served, sql)
    finally:
        served.close()
        plain.close()


def test_python_variables_are_the_callers(pair: Any) -> None:
    """DuckDB reads a Python variable of the calling code as a table, as plain duckdb does; never
    one of duckserve's own (a local named ``threads``, ``sql`` or ``scope`` inside duckserve)."""
    plain, served = pair
    frame = pd.DataFrame({"a": [1, 2]})  # noqa: F841 - read by the statements below
    arrow_table = pa.table({"b": ["x"]})  # noqa: F841
    for name in ("frame", "arrow_table", "threads", "user_threads", "scope", "statement", "self", "text", "edits",
                 "sources", "result", "query_id", "context", "started", "live"):
        check(plain, served, f"SELECT * FROM {name}")


def test_put_aside_rows_that_python_cannot_hold(pair: Any) -> None:
    """Rows put aside as Python values, then read as Arrow: where Python lost a type's detail, the
    error says so and what to do, instead of an answer that differs from DuckDB's."""
    plain, served = pair
    for lossy in ("INTERVAL 1 MONTH", "TIMESTAMP_NS '2024-01-01 00:00:00.123456789'",
                  "union_value(age := 5::SMALLINT)::UNION(name VARCHAR, age SMALLINT)"):
        cursor = served.cursor().execute(f"SELECT 1::HUGEINT AS h, {lossy} AS x")
        served.cursor().execute("SELECT 42")
        with pytest.raises(duckserve.NotSupportedError, match="Read the result in the form you need"):
            cursor.fetch_arrow_table()
        assert repr(cursor.fetchall()) == repr(plain.execute(f"SELECT 1::HUGEINT AS h, {lossy} AS x").fetchall())
