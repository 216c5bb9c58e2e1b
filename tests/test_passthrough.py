"""DuckDB-only syntax passes through duckserve untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckserve
from tests.conftest import rows


def test_duckdb_features_pass_through(conn: Any, tmp_path: Path) -> None:
    conn.execute("CREATE TABLE sales AS SELECT * FROM (VALUES ('a', 'q1', 10), ('a', 'q2', 20), "
                 "('b', 'q1', 5), ('b', 'q2', 7)) t(region, quarter, amount)")
    # CTE + window function + QUALIFY + :: cast
    assert rows(conn, """
        WITH ranked AS (SELECT region, amount FROM sales)
        SELECT region, amount::VARCHAR AS amount FROM ranked
        QUALIFY row_number() OVER (PARTITION BY region ORDER BY amount DESC) = 1 ORDER BY region
    """) == [{"region": "a", "amount": "20"}, {"region": "b", "amount": "7"}]
    # list and struct literals, lambdas, != and // operators
    assert rows(conn, "SELECT [1, 2, 3] AS l, {'k': 1, 'v': 'x'} AS s, list_transform([1, 2], lambda x: x * 2) AS d, "
                      "7 // 2 AS q, 1 != 2 AS ne") == [
        {"l": [1, 2, 3], "s": {"k": 1, "v": "x"}, "d": [2, 4], "q": 3, "ne": True}]
    # PIVOT
    assert rows(conn, "PIVOT sales ON quarter USING sum(amount) ORDER BY region") == [
        {"region": "a", "q1": 10, "q2": 20}, {"region": "b", "q1": 5, "q2": 7}]
    # COPY to and from a file
    out = tmp_path / "sales.csv"
    conn.execute(f"COPY sales TO '{out}' (HEADER)")
    assert out.read_text().splitlines()[0] == "region,quarter,amount"
    conn.execute("CREATE TABLE sales2 (region VARCHAR, quarter VARCHAR, amount INT)")
    cursor = conn.execute(f"COPY sales2 FROM '{out}' (HEADER)")
    assert cursor.rowcount == 4
    # ATTACH another database file
    other = tmp_path / "other.duckdb"
    conn.execute(f"ATTACH '{other}' AS other")
    conn.execute("CREATE TABLE other.t AS SELECT 1 AS one")
    assert rows(conn, "SELECT one FROM other.t") == [{"one": 1}]
    conn.execute("DETACH other")
    # dollar-quoted strings and comments with semicolons in a script
    cursor = conn.cursor()
    cursor.execute("SELECT 1; -- x; y\nSELECT $$a;b$$ AS s")
    assert cursor.fetchall() == [("a;b",)]
    # DESCRIBE, SHOW TABLES and USE remain DuckDB's
    assert {"column_name": "region"}.items() <= rows(conn, "DESCRIBE sales")[0].items()
    assert {r["name"] for r in rows(conn, "SHOW TABLES")} >= {"sales", "sales2"}


def test_database_file_persists(tmp_path: Path) -> None:
    db = tmp_path / "data.duckdb"
    with duckserve.connect(str(db), home=str(tmp_path / "home")) as c:
        c.execute("CREATE TABLE t AS SELECT 41 + 1 AS answer")
    with duckserve.connect(str(db), home=str(tmp_path / "home")) as c:
        assert rows(c, "SELECT answer FROM t") == [{"answer": 42}]
