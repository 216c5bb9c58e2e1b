"""PEP 249 conformance of duckserve.connect()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import duckserve
from duckserve import errors


def test_module_globals() -> None:
    assert duckserve.apilevel == "2.0"
    assert duckserve.threadsafety in (0, 1, 2, 3)
    assert duckserve.paramstyle == "qmark"
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
                 "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        assert issubclass(getattr(duckserve, name), Exception)
    assert issubclass(duckserve.ProgrammingError, duckserve.DatabaseError)
    assert issubclass(duckserve.DatabaseError, duckserve.Error)
    assert issubclass(duckserve.InterfaceError, duckserve.Error)


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, duckserve; print(','.join(m for m in ('duckdb', 'sqlglot', 'pandas', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_cursor_lifecycle(conn: Any) -> None:
    cur = conn.cursor()
    assert cur.description is None and cur.rowcount == -1
    assert cur.arraysize == 1
    cur.execute("CREATE TABLE t (i INTEGER, s VARCHAR)")
    cur.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b"), (3, None)])
    assert cur.rowcount == 3
    cur.execute("SELECT i, s FROM t WHERE i >= ? ORDER BY i", (1,))
    assert [d[0] for d in cur.description] == ["i", "s"]
    assert all(len(d) == 7 for d in cur.description)
    assert cur.rowcount == -1  # as DuckDB's cursor: a query's count is known once its rows are read
    assert cur.fetchone() == (1, "a")
    assert cur.fetchmany() == [(2, "b")]
    assert cur.fetchmany(5) == [(3, None)]
    assert cur.fetchone() is None
    assert cur.rowcount == 3
    assert cur.fetchall() == []
    cur.execute("SELECT i FROM t ORDER BY i")
    assert [r for r in cur] == [(1,), (2,), (3,)]
    cur.execute("UPDATE t SET s = 'z' WHERE i > 1")
    assert cur.rowcount == 2
    cur.close()
    with pytest.raises(errors.InterfaceError):
        cur.execute("SELECT 1")


def test_fetch_before_execute_and_no_rows(conn: Any) -> None:
    cur = conn.cursor()
    with pytest.raises(errors.InterfaceError):
        cur.fetchone()


def test_arrow_and_pandas(conn: Any) -> None:
    cur = conn.cursor().execute("SELECT range AS i, range * 1.5 AS f FROM range(4)")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 4 and table.column_names == ["i", "f"]
    df = conn.cursor().execute("SELECT range AS i FROM range(3)").fetch_pandas_all()
    assert list(df["i"]) == [0, 1, 2]


def test_named_and_positional_parameters(conn: Any) -> None:
    assert conn.execute("SELECT ? + ?", [1, 2]).fetchone() == (3,)
    assert conn.execute("SELECT $a || $b", {"a": "x", "b": "y"}).fetchone() == ("xy",)
    with pytest.raises(errors.ProgrammingError, match="no parameters"):
        conn.execute("SHOW ROLES LIKE ?", ["x"])


def test_errors_are_translated(conn: Any) -> None:
    with pytest.raises(errors.ProgrammingError, match="nope"):
        conn.execute("SELECT * FROM nope")
    conn.execute("CREATE TABLE u (i INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO u VALUES (1)")
    with pytest.raises(errors.IntegrityError):
        conn.execute("INSERT INTO u VALUES (1)")
    with pytest.raises(errors.DataError):
        conn.execute("SELECT 'abc'::INTEGER")


def test_transactions(conn: Any) -> None:
    conn.execute("CREATE TABLE t (i INTEGER)")
    conn.execute("BEGIN TRANSACTION")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.execute("BEGIN TRANSACTION")
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    conn.commit()  # nothing open: a no-op, as PEP 249 allows


def test_context_managers_and_close(home: Path) -> None:
    with duckserve.connect(home=str(home)) as c:
        with c.cursor() as cur:
            assert cur.execute("SELECT 1").fetchall() == [(1,)]
    assert c.closed
    with pytest.raises(errors.InterfaceError, match="closed"):
        c.cursor()
