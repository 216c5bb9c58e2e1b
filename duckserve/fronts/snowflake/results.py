"""Results in the form Snowflake's drivers read: a ``rowtype`` per column and Arrow IPC streams
whose fields carry Snowflake's logical type in their metadata (``logicalType``, ``scale``, ...).

Only the result's own Arrow table is kept; each chunk is converted when a client asks for it, so a
large result is never held twice. Most columns change only their metadata (integers, floats,
strings and dates keep DuckDB's buffers); timestamps and times become the integer counts Snowflake
sends, and decimals whose values fit in 64 bits their unscaled integers, as Snowflake sends a NUMBER
(the connector makes a ``Decimal`` of those three times faster than of a decimal128); nested and exotic values (LIST, STRUCT, MAP, INTERVAL, UUID, ...) travel as the
JSON or text DuckDB renders for them, typed ARRAY, OBJECT or TEXT as Snowflake types such values.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

#: rows in the first answer (inline, base64) and per chunk a client downloads afterwards
FIRST_CHUNK_ROWS = 8_192
CHUNK_ROWS = 131_072

_TIME_SCALES = {"s": 0, "ms": 3, "us": 6, "ns": 9}


@dataclass(frozen=True)
class Column:
    """How one result column travels: its Snowflake type and the Arrow type it is sent as."""

    name: str
    logical: str            # FIXED, REAL, TEXT, BOOLEAN, DATE, TIME, TIMESTAMP_NTZ, ...
    arrow_type: pa.DataType
    precision: int | None = None
    scale: int | None = None
    length: int | None = None
    byte_length: int | None = None
    as_text: str | None = None   # "json" or "text": rendered by DuckDB before sending

    def rowtype(self) -> dict[str, Any]:
        return {
            "name": self.name, "database": "", "schema": "", "table": "", "nullable": True,
            "type": self.logical.lower(), "precision": self.precision, "scale": self.scale,
            "length": self.length, "byteLength": self.byte_length, "collation": None,
        }

    def field(self) -> pa.Field:
        metadata = {"logicalType": self.logical, "precision": str(self.precision or 38),
                    "scale": str(self.scale or 0), "charLength": str(self.length or 0),
                    "byteLength": str(self.byte_length or 0), "finalType": "T"}
        return pa.field(self.name, self.arrow_type, nullable=True, metadata=metadata)


_TEXT_LENGTH = 16_777_216


def _text(name: str, logical: str = "TEXT", as_text: str | None = None) -> Column:
    return Column(name, logical, pa.string(), length=_TEXT_LENGTH, byte_length=_TEXT_LENGTH, as_text=as_text)


def column_for(name: str, arrow_type: pa.DataType) -> Column:
    """The Snowflake column a DuckDB result column of ``arrow_type`` is sent as."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return column_for(name, t.value_type)
    if pa.types.is_boolean(t):
        return Column(name, "BOOLEAN", pa.bool_())
    if pa.types.is_integer(t):
        signed = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}
        wider = {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}
        width = t.bit_width
        if pa.types.is_signed_integer(t):
            return Column(name, "FIXED", signed[width], precision=38, scale=0)
        if width < 64:
            return Column(name, "FIXED", wider[width], precision=38, scale=0)
        return Column(name, "FIXED", pa.decimal128(20, 0), precision=20, scale=0)
    if pa.types.is_floating(t):
        return Column(name, "REAL", pa.float64())
    if pa.types.is_decimal(t):
        if t.precision > 38:
            return _text(name)
        return Column(name, "FIXED", pa.decimal128(t.precision, t.scale), precision=t.precision, scale=t.scale)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _text(name)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return Column(name, "BINARY", pa.binary(), length=8_388_608, byte_length=8_388_608)
    if pa.types.is_date32(t) or pa.types.is_date64(t):
        return Column(name, "DATE", pa.date32())
    if pa.types.is_time(t):
        scale = _TIME_SCALES[t.unit]
        return Column(name, "TIME", pa.int64(), precision=0, scale=scale)
    if pa.types.is_timestamp(t):
        scale = _TIME_SCALES[t.unit]
        logical = "TIMESTAMP_LTZ" if t.tz else "TIMESTAMP_NTZ"
        return Column(name, logical, pa.int64(), precision=0, scale=scale)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _text(name, "ARRAY", "json")
    if pa.types.is_struct(t) or pa.types.is_map(t):
        return _text(name, "OBJECT", "json")
    if pa.types.is_null(t):
        return _text(name)
    extension = getattr(t, "extension_name", "")
    if extension and "json" in str(extension).lower():
        return _text(name, "VARIANT", "text")
    return _text(name, "TEXT", "text")


_INT64_MAX = 2**63 - 1


def _fits_int64(array: pa.ChunkedArray, scale: int) -> bool:
    """Whether every unscaled value of a decimal column fits in a signed 64-bit integer."""
    bounds = pc.min_max(array)
    limit = Decimal(_INT64_MAX).scaleb(-scale)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return low is None or (-limit <= low and high <= limit)


def _unscaled(chunk: pa.Array) -> pa.Array:
    """A decimal128 array whose values fit in 64 bits as its unscaled int64 values: the low half of
    each 16-byte little-endian two's-complement value is that value."""
    import numpy as np

    words = np.frombuffer(chunk.buffers()[1], dtype=np.int64)
    values = words[2 * chunk.offset: 2 * (chunk.offset + len(chunk)): 2]
    mask = chunk.is_null().to_numpy(zero_copy_only=False) if chunk.null_count else None
    return pa.array(values, type=pa.int64(), mask=mask)


def _narrowed(column: Column, array: pa.ChunkedArray) -> Column:
    """A decimal column sent as unscaled int64 when its values allow, as Snowflake sends NUMBER."""
    t = array.type
    if (pa.types.is_decimal(t) and pa.types.is_decimal(column.arrow_type) and t.bit_width == 128
            and _fits_int64(array, t.scale)):
        return replace(column, arrow_type=pa.int64())
    return column


def _to_snowflake(array: pa.ChunkedArray, column: Column) -> pa.ChunkedArray:
    t = array.type
    if pa.types.is_dictionary(t):
        array = array.cast(t.value_type)
        t = array.type
    if column.logical in ("TIME", "TIMESTAMP_NTZ", "TIMESTAMP_LTZ"):
        if pa.types.is_time32(t):
            array = array.cast(pa.time64("us")) if t.unit == "ms" else array.cast(pa.time64("us"))
        return array.cast(pa.int64())
    if column.logical == "DATE" and pa.types.is_date64(t):
        return array.cast(pa.date32())
    if pa.types.is_decimal(t) and column.arrow_type == pa.int64():
        return pa.chunked_array([_unscaled(chunk) for chunk in array.chunks], type=pa.int64())
    if array.type != column.arrow_type:
        return array.cast(column.arrow_type)
    return array


class ResultSet:
    """A statement's result kept once, cut into Snowflake chunks on demand."""

    def __init__(self, table: pa.Table, first_rows: int = FIRST_CHUNK_ROWS, chunk_rows: int = CHUNK_ROWS) -> None:
        self.table = table
        names = _unique_names(table.column_names)
        self.columns = [_narrowed(column_for(n, f.type), table.column(i))
                        for i, (n, f) in enumerate(zip(names, table.schema))]
        self.schema = pa.schema([c.field() for c in self.columns])
        self.first_rows = min(first_rows, table.num_rows)
        self.chunk_rows = chunk_rows
        rest = table.num_rows - self.first_rows
        self.chunk_count = (rest + chunk_rows - 1) // chunk_rows if rest > 0 else 0

    @property
    def rowtype(self) -> list[dict[str, Any]]:
        return [c.rowtype() for c in self.columns]

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        start = self.first_rows + index * self.chunk_rows
        return start, min(self.chunk_rows, self.num_rows - start)

    def chunk_sizes(self) -> list[int]:
        return [self.chunk_bounds(i)[1] for i in range(self.chunk_count)]

    def ipc(self, offset: int, length: int) -> bytes:
        """Rows ``offset .. offset+length`` as a Snowflake Arrow IPC stream."""
        part = self.table.slice(offset, length)
        arrays = [_to_snowflake(self._rendered(part, i, c), c) for i, c in enumerate(self.columns)]
        converted = pa.Table.from_arrays(arrays, schema=self.schema)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.schema) as writer:
            for batch in converted.to_batches(max_chunksize=max(1, length)):
                writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    def first_chunk_base64(self) -> str:
        if not self.columns:
            return ""
        return base64.b64encode(self.ipc(0, self.first_rows)).decode("ascii")

    def chunk(self, index: int) -> bytes:
        if not 0 <= index < self.chunk_count:
            raise IndexError(index)
        return self.ipc(*self.chunk_bounds(index))

    def _rendered(self, part: pa.Table, index: int, column: Column) -> pa.ChunkedArray:
        array = part.column(index)
        if column.as_text is None:
            return array
        return render_text(array, json=column.as_text == "json")

    def rows_as_json(self) -> list[list[str | None]]:
        """The whole result as Snowflake's JSON rowset: every value a string (for small results,
        such as the row counts of DML statements)."""
        out: list[list[str | None]] = []
        columns = [self._rendered(self.table, i, c) for i, c in enumerate(self.columns)]
        values = [c.to_pylist() for c in columns]
        for row in zip(*values):
            out.append([None if v is None else _json_text(v) for v in row])
        return out


def _json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def render_text(array: pa.ChunkedArray, json: bool) -> pa.ChunkedArray:
    """Values DuckDB renders as text: JSON for nested values, its own VARCHAR cast for the rest."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("rendered_values", pa.table({"v": array}))
        expression = "to_json(v)::VARCHAR" if json else "v::VARCHAR"
        rendered = con.sql(f"SELECT {expression} AS v FROM rendered_values").to_arrow_table()
        return rendered.column(0).cast(pa.string())
    finally:
        con.close()


def _unique_names(names: list[str]) -> list[str]:
    return list(names)


def count_of(table: pa.Table | None) -> int | None:
    """The number of rows a DML statement reports (DuckDB's one-row ``Count`` result)."""
    if table is None or table.num_rows != 1 or table.num_columns != 1:
        return None
    value = table.column(0)[0].as_py()
    return int(value) if isinstance(value, int) else None


def empty_like(table: pa.Table) -> pa.Table:
    return table.slice(0, 0)


def is_all_null(array: pa.ChunkedArray) -> bool:
    return bool(pc.all(pc.is_null(array)).as_py())
