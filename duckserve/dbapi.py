"""PEP 249 type objects and constructors, exported by the ``duckserve`` module.

A column's type code in ``cursor.description`` is DuckDB's own type object (``DuckDBPyType``), as
duckdb's cursor gives it; the type objects here compare equal to the type codes of their
category (``cursor.description[0][1] == duckserve.NUMBER``), whatever a type's parameters
(``DECIMAL(18,3)``) or alias (``JSON`` is a VARCHAR). They also accept a type's name as text.
No duckdb import: ``import duckserve`` stays cheap.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable


class DBAPITypeObject:
    """A PEP 249 type category: equal to every column type whose id is in it."""

    def __init__(self, name: str, type_ids: Iterable[str]) -> None:
        self.name = name
        self.type_ids = frozenset(type_ids)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DBAPITypeObject):
            return other.type_ids == self.type_ids
        type_id = getattr(other, "id", None)  # a DuckDBPyType
        if type_id is None and isinstance(other, str):
            type_id = other.split("(", 1)[0].strip().lower()
            type_id = {"json": "varchar", "timestamptz": "timestamp with time zone",
                       "timetz": "time with time zone"}.get(type_id, type_id)
        return type_id in self.type_ids

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.type_ids)

    def __repr__(self) -> str:
        return f"<duckserve.{self.name}: {', '.join(sorted(t.upper() for t in self.type_ids))}>"


STRING = DBAPITypeObject("STRING", {"varchar"})
BINARY = DBAPITypeObject("BINARY", {"blob", "bit"})
NUMBER = DBAPITypeObject("NUMBER", {"tinyint", "utinyint", "smallint", "usmallint", "integer", "uinteger",
                                    "bigint", "ubigint", "hugeint", "uhugeint", "bignum", "decimal", "float",
                                    "double"})
DATETIME = DBAPITypeObject("DATETIME", {"date", "time", "time_ns", "time with time zone", "timestamp",
                                        "timestamp with time zone", "timestamp_ns", "timestamp_ms", "timestamp_s",
                                        "interval"})
#: DuckDB's ``rowid`` pseudo-column is a BIGINT: no column type is a row id of its own
ROWID = DBAPITypeObject("ROWID", set())

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 - the PEP 249 name
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802 - the PEP 249 name
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802 - the PEP 249 name
    return Timestamp(*time.localtime(ticks)[:6])


__all__ = ["BINARY", "DATETIME", "NUMBER", "ROWID", "STRING", "Binary", "DBAPITypeObject", "Date", "DateFromTicks",
           "Time", "TimeFromTicks", "Timestamp", "TimestampFromTicks"]
