"""JSON values to a method's input frame: the part every JSON request format shares.

The service-function protocol sends rows, MLflow's scoring protocol rows, records or columns, the
Open Inference Protocol one tensor per input; each protocol module unwraps its envelope and hands
the values here. The result is a DataFrame with exactly the method's inputs, in signature order,
converted to the signature's types; anything that does not fit is a `ProtocolError` (400) naming
the input, the expected type and the offending value.

The hot path: when every input is a scalar FLOAT or DOUBLE and the values are plain numbers, the
rows become one numpy block in a single ``np.array`` call instead of a Python list per column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from duckserve.inference_server.errors import MissingInput, ProtocolError
from duckserve.inference_server.manifest import FeatureSpec, MethodSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class Inputs:
    """A decoded request: the method's inputs as a DataFrame, or (the hot path) as one numeric
    block of rows x inputs whose DataFrame is built only if a handler needs it."""

    __slots__ = ("method", "block", "_frame")

    def __init__(self, method: MethodSpec, frame: pd.DataFrame | None = None, block: np.ndarray | None = None) -> None:
        self.method = method
        self.block = block
        self._frame = frame

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            assert self.block is not None
            self._frame = frame_from_block(self.block, self.method)
        return self._frame

    def __len__(self) -> int:
        return len(self.block) if self.block is not None else len(self.frame)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (send null for a missing value)")


def loads(body: bytes | str) -> Any:
    """A request body as JSON, strictly: NaN and Infinity, which Python's json accepts, are refused
    (a model given infinity fails inside, which must not become a 5xx)."""
    return json.loads(body, parse_constant=_no_constant)


_MATRIX_CHARS = b"0123456789+-.eE,[] \t\r\n"


def split_matrix(body: bytes, key: bytes, width: int) -> tuple[bytes, np.ndarray] | None:
    """The hot path for large JSON batches: when the value of ``key`` (it must occur once) is a
    matrix of plain numbers ``[[n, ...], ...]`` with ``width`` numbers per row, return the body with
    that value replaced by ``[]`` (for json to parse the small rest) and the matrix as a float64
    block (column-major), parsed by Arrow's CSV reader (exact, several times faster than a Python
    float per value). None otherwise (strings, nulls, booleans, ragged rows, anything unusual): the
    caller parses the whole body as JSON."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    quoted = b'"' + key + b'"'
    if len(body) < 8192 or body.count(quoted) != 1:
        return None
    position = body.index(quoted) + len(quoted)
    while position < len(body) and body[position] in b" \t\r\n":
        position += 1
    if body[position:position + 1] != b":":
        return None
    position += 1
    while position < len(body) and body[position] in b" \t\r\n":
        position += 1
    if body[position:position + 1] != b"[":
        return None
    end = body.find(b"]]", position)
    if end < 0:
        return None
    end += 2
    region = body[position:end]
    if region.translate(None, _MATRIX_CHARS):
        return None  # strings, nulls, booleans, objects: not a matrix of numbers
    compact = region.translate(None, b" \t\r\n")
    inner = compact[2:-2]
    separators = inner.count(b"],[")
    if not compact.startswith(b"[[") or inner.count(b"[") != separators or inner.count(b"]") != separators:
        return None  # nested lists, or not one list per row
    rows = separators + 1
    if inner.count(b",") != rows * (width - 1) + separators:
        return None
    text = inner.replace(b"],[", b"\n")
    names = [f"c{i}" for i in range(width)]
    try:
        table = pacsv.read_csv(io.BytesIO(text), read_options=pacsv.ReadOptions(column_names=names),
                               convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64())))
    except (pa.ArrowInvalid, ValueError):
        return None  # a row of another width, a number Arrow does not read: the JSON path says what
    if table.num_rows != rows or any(table.column(n).null_count for n in names):
        return None
    block = np.empty((rows, width), dtype=np.float64, order="F")
    for j, name in enumerate(names):
        start = 0
        for chunk in table.column(name).chunks:
            block[start:start + len(chunk), j] = chunk.to_numpy()
            start += len(chunk)
    return body[:position] + b"[]" + body[end:], block


def input_names(method: MethodSpec) -> str:
    return ", ".join(f.name for f in method.inputs)


def all_float(method: MethodSpec) -> bool:
    return bool(method.inputs) and all(not f.shape and f.dtype in ("DOUBLE", "FLOAT") for f in method.inputs)


def may_hold_booleans(body: bytes | None) -> bool:
    """Whether a JSON text may hold true or false (numpy would silently take them for 1 and 0)."""
    return body is None or b"true" in body or b"false" in body


def numeric_block(rows: Sequence[Any], method: MethodSpec, skip: int = 0,
                  body: bytes | None = None) -> np.ndarray | None:
    """Rows of plain numbers as one float64 block (``skip`` leading columns kept), or None when the
    values need the per-value path (nulls, strings, nested lists, booleans, ragged rows). ``body``,
    the JSON text the rows came from, spares a scan for booleans when it holds none."""
    import numpy as np

    if not all_float(method) or not rows:
        return None
    try:
        block = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if block.ndim != 2 or block.shape[1] != len(method.inputs) + skip or block.dtype.kind not in "fiu":
        return None
    if may_hold_booleans(body) and any(type(v) is bool for row in rows for v in row):
        return None
    return block.astype(np.float64, copy=False)


def frame_from_block(block: np.ndarray, method: MethodSpec) -> pd.DataFrame:
    """A numeric block (rows x inputs) as the input frame, column-major like a frame built by columns."""
    import numpy as np
    import pandas as pd

    if len({f.dtype for f in method.inputs}) == 1:
        dtype = np.float32 if method.inputs[0].dtype == "FLOAT" else np.float64
        matrix = np.asfortranarray(block, dtype=dtype)
        return pd.DataFrame(matrix, columns=[f.name for f in method.inputs], copy=False)
    return pd.DataFrame({f.name: block[:, j].astype(np.float32 if f.dtype == "FLOAT" else np.float64)
                         for j, f in enumerate(method.inputs)})


def coerce_column(values: Sequence[Any], feature: FeatureSpec, position: int,
                  ids: Sequence[Any] | np.ndarray | None = None) -> pd.Series:
    from duckserve.inference_server.datatypes import coerce_values

    return coerce_values(values, feature, ids=ids, position=position)


def frame_from_columns(columns: Mapping[str, Sequence[Any]], method: MethodSpec, where: str,
                       ids: Sequence[Any] | np.ndarray | None = None) -> Inputs:
    """Named columns of values (matched to the inputs by name, exactly or ignoring case)."""
    import pandas as pd

    folded = {str(name).lower(): name for name in columns}
    lengths = {len(v) for v in columns.values() if isinstance(v, (list, tuple))}
    if len(lengths) > 1:
        raise ProtocolError(f"{where}: the columns have different lengths ({', '.join(map(str, sorted(lengths)))})")
    result: dict[str, pd.Series] = {}
    for position, feature in enumerate(method.inputs, start=1):
        name = feature.name if feature.name in columns else folded.get(feature.name.lower())
        if name is None:
            given = ", ".join(map(str, columns)) or "none"
            raise MissingInput(f"{where} has no input {feature.name}; method {method.name} takes "
                                f"{input_names(method)} (got {given})")
        values = columns[name]
        if not isinstance(values, (list, tuple)):
            raise ProtocolError(f"{where}: input {feature.name} must be a list of values, got "
                                f"{type(values).__name__}")
        result[feature.name] = coerce_column(values, feature, position, ids)
    rows = len(next(iter(result.values()))) if result else 0
    return Inputs(method, pd.DataFrame(result, index=pd.RangeIndex(rows)))


def frame_from_rows(rows: Sequence[Any], method: MethodSpec, where: str, names: Sequence[Any] | None = None,
                    skip: int = 0, ids: Sequence[Any] | np.ndarray | None = None,
                    body: bytes | None = None) -> Inputs:
    """Rows of values: positional (in signature order) or, with ``names``, one value per name.
    ``skip`` leading values of each row are not inputs (the service-function row index)."""
    import pandas as pd

    if not rows:
        return Inputs(method, empty_frame(method))
    if not all(type(row) is list for row in rows):
        position = next(i for i, row in enumerate(rows) if type(row) is not list)
        raise ProtocolError(f"{where}[{position}] is {type(rows[position]).__name__}, not a list of values")
    if names is None:
        width = len(method.inputs) + skip
        for position, row in enumerate(rows):
            if len(row) != width:
                raise ProtocolError(f"{where}[{position}] has {len(row) - skip} values, expected "
                                    f"{len(method.inputs)}: {input_names(method)}")
        block = numeric_block(rows, method, skip=skip, body=body)
        if block is not None:
            return Inputs(method, block=block[:, skip:])
        return Inputs(method, pd.DataFrame({f.name: coerce_column([row[j] for row in rows], f, j - skip + 1, ids)
                                            for j, f in enumerate(method.inputs, start=skip)},
                                           index=pd.RangeIndex(len(rows))))
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ProtocolError(f"{where}: the column names repeat ({', '.join(names)})")
    for position, row in enumerate(rows):
        if len(row) != len(names):
            raise ProtocolError(f"{where}[{position}] has {len(row)} values for {len(names)} columns")
    if names == [f.name for f in method.inputs]:
        block = numeric_block(rows, method, body=body)
        if block is not None:
            return Inputs(method, block=block)
    return frame_from_columns({n: [row[j] for row in rows] for j, n in enumerate(names)}, method, where, ids)


def frame_from_records(records: Sequence[Any], method: MethodSpec, where: str) -> Inputs:
    """One object per row, keyed by input name."""
    if not records:
        return Inputs(method, empty_frame(method))
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise ProtocolError(f"{where}[{position}] is {type(record).__name__}, not an object of "
                                f"{input_names(method)}")
    names: list[str] = []
    seen: set[str] = set()
    for record in records:
        for key in record:
            if key not in seen:
                seen.add(key)
                names.append(key)
    columns = {name: [record.get(name) for record in records] for name in names}
    return frame_from_columns(columns, method, where)


def empty_frame(method: MethodSpec) -> pd.DataFrame:
    import pandas as pd

    from duckserve.inference_server.datatypes import empty_series

    return pd.DataFrame({f.name: empty_series(f) for f in method.inputs})
