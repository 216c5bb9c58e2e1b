"""Results as JSON the front end renders: column names, DuckDB-ish type names, rows of plain values."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

import pyarrow as pa

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


def type_name(arrow_type: pa.DataType) -> str:
    """A short type label for a column header."""
    if pa.types.is_integer(arrow_type):
        return "NUMBER"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "FLOAT" if not pa.types.is_decimal(arrow_type) else "NUMBER"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "ARRAY"
    if pa.types.is_struct(arrow_type) or pa.types.is_map(arrow_type):
        return "OBJECT"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "BINARY"
    return "VARCHAR"


def records(table: pa.Table | None) -> list[dict[str, Any]]:
    """Every row of a (small, SHOW-sized) result as a dict of plain values."""
    if table is None:
        return []
    return [{k: plain(v) for k, v in row.items()} for row in table.to_pylist()]


def result_json(table: pa.Table | None, limit: int = MAX_ROWS) -> dict[str, Any]:
    """A worksheet result: columns with types, the first ``limit`` rows, the row count."""
    if table is None:
        return {"columns": [], "rows": [], "row_count": 0, "truncated": False}
    head = table.slice(0, limit)
    columns = [{"name": f.name, "type": type_name(f.type)} for f in table.schema]
    columns_values = [column.to_pylist() for column in head.columns]   # by position: names may repeat
    rows = [[plain(v) for v in row] for row in zip(*columns_values)] if columns_values else []
    return {"columns": columns, "rows": rows, "row_count": table.num_rows, "truncated": table.num_rows > limit}
