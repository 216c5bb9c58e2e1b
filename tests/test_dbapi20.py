"""The standard PEP 249 conformance suite (PyPI's dbapi-compliance) against duckserve.connect.

Only what PEP 249 marks optional, and the suite leaves to each driver, is overridden here:
``nextset`` (optional; duckserve's cursor has no multiple result sets, so it has no nextset) and
``setoutputsize`` (the suite's own test says it is driver-dependent; duckserve accepts and ignores it).
"""

from __future__ import annotations

import tempfile

import dbapi20

import duckserve


class DuckserveDBAPI20(dbapi20.DatabaseAPI20Test):
    driver = duckserve
    connect_args = ()
    lower_func = "lower"  # callproc calls a function

    def setUp(self) -> None:
        self._home = tempfile.TemporaryDirectory()
        self.connect_kw_args = {"home": self._home.name}

    def tearDown(self) -> None:
        super().tearDown()
        self._home.cleanup()

    def test_nextset(self) -> None:
        cursor = self._connect().cursor()
        assert not hasattr(cursor, "nextset"), "nextset is optional; duckserve has no multiple result sets"

    def test_setoutputsize(self) -> None:
        cursor = self._connect().cursor()
        cursor.setoutputsize(1000)
        cursor.setoutputsize(2000, 0)
        self.executeDDL1(cursor)
        cursor.execute(f"insert into {self.table_prefix}booze values ('x')")
        cursor.execute(f"select name from {self.table_prefix}booze")
        assert cursor.fetchall() == [("x",)]


def test_type_objects_compare_with_description_types(conn: object) -> None:
    cursor = conn.cursor().execute(  # type: ignore[attr-defined]
        "SELECT 'a' AS s, 1 AS i, 2.5::DECIMAL(4,1) AS d, DATE '2024-01-01' AS day, TIMESTAMPTZ '2024-01-01' AS ts, "
        "'\\x00'::BLOB AS b, '{}'::JSON AS j")
    types = [d[1] for d in cursor.description]
    assert types[0] == duckserve.STRING and types[6] == duckserve.STRING and types[0] != duckserve.NUMBER
    assert types[1] == duckserve.NUMBER and types[2] == duckserve.NUMBER
    assert types[3] == duckserve.DATETIME and types[4] == duckserve.DATETIME
    assert types[5] == duckserve.BINARY
    assert duckserve.Binary(b"x") == b"x" and duckserve.Date(2024, 1, 2).day == 2
    assert duckserve.TimestampFromTicks(0).year in (1969, 1970)
