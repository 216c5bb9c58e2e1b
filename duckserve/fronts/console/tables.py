"""Results as JSON the front end renders: column names, DuckDB's type names, rows of plain values."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

#: the most rows a result sends to the browser (the row count says how many there were)
MAX_ROWS = 2_000


def plain(value: Any) -> Any:
    """A value JSON can carry without losing what it says: times as ISO text, decimals and
    non-finite floats as text, bytes as base64, nested values element by element."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def records(result: Any) -> list[dict[str, Any]]:
    """Every row of a (small, SHOW-sized) statement result as a dict of plain values."""
    if result is None or not result.has_rows:
        return []
    names = result.names
    return [{name: plain(value) for name, value in zip(names, row)} for row in result.fetchall()]


def result_json(result: Any, limit: int = MAX_ROWS) -> dict[str, Any]:
    """A worksheet result: columns with DuckDB's type names, the first ``limit`` rows as DuckDB's
    cursor returns them, and the row count (the rest is counted, not sent)."""
    if result is None or not result.has_rows:
        return {"columns": [], "rows": [], "row_count": 0, "truncated": False}
    columns = [{"name": d[0], "type": str(d[1])} for d in result.description]
    rows = [[plain(v) for v in row] for row in result.fetchmany(limit)]
    rest = result.arrow_table().num_rows if len(rows) == limit else 0
    return {"columns": columns, "rows": rows, "row_count": len(rows) + rest, "truncated": rest > 0}
