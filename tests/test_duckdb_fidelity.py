"""Each case of issue 9, one by one: DuckDB's answers, DuckDB's catalog, DuckDB's statement text."""

from __future__ import annotations

import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from duckserve import errors


def one(conn: Any, sql: str) -> Any:
    return conn.execute(sql).fetchone()[0]


def test_values_the_issue_names(conn: Any) -> None:
    assert one(conn, "SELECT 340282366920938463463374607431768211455::UHUGEINT") == 2**128 - 1
    offset = one(conn, "SELECT TIMETZ '10:00:00+03'")
    assert offset == datetime.time(10, tzinfo=datetime.timezone(datetime.timedelta(hours=3)))
    assert one(conn, "SELECT '24:00:00'::TIME") == "24:00:00"  # DuckDB's own answer: Python has no 24:00
    assert one(conn, "SELECT INTERVAL 1 MONTH") == datetime.timedelta(days=30)
    assert one(conn, "SELECT 'infinity'::DATE") == datetime.date.max
    assert type(one(conn, "SELECT 1::HUGEINT")) is int
    assert one(conn, "SELECT [1, 2]::INTEGER[2]") == (1, 2)  # an ARRAY is a tuple, as DuckDB gives it
    assert one(conn, "SELECT MAP {'a': 1}") == {"a": 1}
    assert one(conn, "SELECT '0101'::BIT") == "0101"


def test_no_views_of_duckserve_in_the_catalog(conn: Any) -> None:
    conn.execute("SELECT 42")
    conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
    conn.execute("SHOW COMPUTE POOLS")
    assert conn.execute("SELECT name FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))").fetchall() == [("P",)]
    assert conn.execute("SELECT name FROM (SHOW COMPUTE POOLS)").fetchall() == [("P",)]
    assert conn.execute("SHOW TABLES").fetchall() == []
    assert conn.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM information_schema.tables").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name LIKE '%duckserve%'").fetchone() == (0,)


def test_rollback_after_use_of_an_attached_database(conn: Any) -> None:
    plain = duckdb.connect()
    for sql in ("ATTACH ':memory:' AS database", "BEGIN", "USE database", "SELECT 1", "ROLLBACK"):
        plain.execute(sql)
        conn.execute(sql)
    assert one(conn, "SELECT current_database()") == plain.execute("SELECT current_database()").fetchone()[0]


def test_statement_text_as_written(conn: Any) -> None:
    assert one(conn, "SELECT current_query();") == "SELECT current_query();"
    assert one(conn, "-- why\nSELECT current_query() /* end */") == "-- why\nSELECT current_query() /* end */"
    conn.execute("PREPARE p AS SELECT $1+$2")
    assert one(conn, "EXECUTE p(40, 2)") == 42
    conn.execute("SET VARIABLE animal = 'duck'")
    assert one(conn, "SELECT $animal") == "duck"
    # in a script with one of our statements, each statement still reaches DuckDB as DuckDB cuts it
    cursor = conn.cursor().execute("SHOW ROLES; SELECT current_query() ; -- done")
    assert cursor.fetchone() == (" SELECT current_query() ; -- done",)
    assert conn.cursor().execute("SHOW ROLES; PREPARE q AS SELECT $1+$2; EXECUTE q(1, 2)").fetchone() == (3,)


def test_duckdb_errors_keep_their_text(conn: Any) -> None:
    with pytest.raises(errors.ProgrammingError) as info:
        conn.execute("SELECT * FROM nosuch")
    assert "LINE 1: SELECT * FROM nosuch" in str(info.value)
    assert isinstance(info.value.__cause__, duckdb.CatalogException)
    with pytest.raises(errors.ProgrammingError, match="Table with name threads does not exist"):
        conn.execute("SELECT * FROM threads")  # a local variable of duckserve's code is not a table
    with pytest.raises(errors.DataError, match="Could not convert string 'abc' to INT32"):
        conn.execute("SELECT 'abc'::INTEGER")


def test_duckdb_forms_of_use_show_and_describe_stay_duckdbs(conn: Any) -> None:
    conn.execute("CREATE TABLE users (name VARCHAR)")
    assert [r[0] for r in conn.execute("SHOW users").fetchall()] == ["name"]  # DuckDB's DESCRIBE users
    assert [r[0] for r in conn.execute("DESCRIBE users").fetchall()] == ["name"]
    assert "ADMIN" in {r[0] for r in conn.execute("SHOW USERS LIKE '%'").fetchall()}  # ours: not DuckDB syntax
    conn.execute("DROP TABLE users")
    assert "ADMIN" in {r[0] for r in conn.execute("SHOW USERS").fetchall()}  # no table users: ours
    conn.execute("CREATE TABLE role (database INTEGER)")
    conn.execute("INSERT INTO role VALUES (7)")
    assert conn.execute("SELECT database FROM role").fetchall() == [(7,)]
    conn.execute("USE SCHEMA analytics")  # ours: the control plane's namespace
    assert conn.session.schema == "ANALYTICS"


def test_streaming_record_batches(conn: Any) -> None:
    cursor = conn.cursor().execute("SELECT range AS i FROM range(300000)")
    batches = cursor.fetch_record_batches(100_000)
    first = next(batches)
    assert isinstance(first, pa.RecordBatch) and first.num_rows == 100_000
    conn.execute("SELECT 1").fetchall()  # another statement: the rest is put aside, not lost
    rest = list(batches)
    assert sum(b.num_rows for b in rest) == 200_000 and rest[-1].column(0)[-1].as_py() == 299_999
    tables = list(conn.cursor().execute("SELECT range AS i FROM range(5)").fetch_arrow_batches(2))
    assert [t.num_rows for t in tables] == [2, 2, 1]


def test_cursors_share_the_session_and_keep_their_rows(conn: Any) -> None:
    first = conn.cursor().execute("SELECT range AS i FROM range(5)")
    assert first.fetchone() == (0,)
    second = conn.cursor().execute("SELECT 'other'")
    assert first.fetchall() == [(1,), (2,), (3,), (4,)]
    assert second.fetchall() == [("other",)]
    assert first.rowcount == 5


def test_python_variables_of_the_caller(conn: Any) -> None:
    frame = pa.table({"x": [1, 2, 3]})  # noqa: F841 - DuckDB reads it by name
    assert conn.execute("SELECT sum(x) FROM frame").fetchone() == (6,)


def test_result_scan_of_a_script_and_of_older_queries(conn: Any) -> None:
    cursor = conn.cursor().execute("SELECT 1 AS a; SELECT 2 AS b; SHOW ROLES; "
                                   "SELECT a FROM RESULT_SCAN(LAST_QUERY_ID(-3))")
    assert cursor.fetchall() == [(1,)]
    with pytest.raises(errors.ProgrammingError, match="no result for query"):
        conn.execute("SELECT * FROM RESULT_SCAN('no-such-id')")


def test_statements_without_rows_have_no_result_set(conn: Any) -> None:
    cursor = conn.cursor().execute("CREATE TABLE t (i INTEGER)")
    assert cursor.description is None and cursor.rowcount == -1
    with pytest.raises(errors.ProgrammingError, match="no result set"):
        cursor.fetchall()
    cursor.execute("INSERT INTO t VALUES (1), (2)")
    assert cursor.description is None and cursor.rowcount == 2
    assert conn.cursor().execute("INSERT INTO t VALUES (3) RETURNING i").fetchall() == [(3,)]
    assert conn.Error is errors.Error and conn.ProgrammingError is errors.ProgrammingError
    conn.close()
    with pytest.raises(errors.InterfaceError):
        conn.close()


def test_autocommit_off_opens_a_transaction(conn: Any) -> None:
    conn.execute("CREATE TABLE t (i INTEGER)")
    conn.autocommit = False
    conn.execute("INSERT INTO t VALUES (1)")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    conn.autocommit = True
    assert conn.execute("SELECT i FROM t").fetchall() == [(2,)]


def test_pandas_is_duckdbs_dataframe(conn: Any) -> None:
    sql = "SELECT TIMESTAMP '2024-01-01 10:00' AS ts, 1.5::DECIMAL(4,1) AS d, [1, 2] AS l"
    expected = duckdb.connect().execute(sql).df()
    assert conn.execute(sql).fetch_pandas_all().equals(expected)
    cursor = conn.execute(sql)
    conn.execute("SELECT 1")  # the rows go aside as Arrow; pandas still comes from DuckDB
    got = cursor.fetch_pandas_all()
    assert list(got.dtypes) == list(expected.dtypes) and repr(got.to_dict("list")) == repr(expected.to_dict("list"))


def test_an_error_past_the_first_rows_stays_with_its_result(conn: Any) -> None:
    conn.execute("SET threads = 1")  # one thread: DuckDB computes the rows as they are fetched
    cursor = conn.cursor().execute(
        "SELECT CASE WHEN range < 1000000 THEN range ELSE error('row ' || range || ' is bad') END AS v "
        "FROM range(1100000)")
    assert cursor.fetchone() == (0,)
    assert conn.execute("SELECT 42").fetchone() == (42,)  # the next statement is not the one that failed
    with pytest.raises(errors.Error, match="row 1000000 is bad"):
        cursor.fetchall()
