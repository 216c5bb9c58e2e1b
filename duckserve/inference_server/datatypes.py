"""Signature data types against numpy, pandas and Arrow.

Three jobs: infer a `FeatureSpec` from sample data; coerce incoming values (JSON values, pandas
columns, Arrow columns) to a feature's type with messages that name the argument, the expected type
and the offending value; and turn output columns into JSON values or Arrow arrays.

Imported lazily (it imports numpy and pandas at module level).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from duckserve.inference_server.errors import ModelError, ProtocolError, ServerError
from duckserve.inference_server.manifest import FeatureSpec

if TYPE_CHECKING:
    import pyarrow as pa

INTEGER_TYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name.lower())
    for name in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
}
FLOAT_TYPES: dict[str, np.dtype[Any]] = {"FLOAT": np.dtype("float32"), "DOUBLE": np.dtype("float64")}
NUMERIC_TYPES = {**INTEGER_TYPES, **FLOAT_TYPES}
#: pandas' nullable dtypes, used when an integer or boolean column has missing values
NULLABLE_DTYPES: dict[str, str] = {
    **{name: name.capitalize().replace("Uint", "UInt") for name in INTEGER_TYPES},
    "BOOL": "boolean",
}
_DATATYPE_OF_NUMPY: dict[str, str] = {
    **{dtype.name: name for name, dtype in INTEGER_TYPES.items()},
    "float16": "FLOAT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "bool": "BOOL",
}
_MAX_REPR = 60


def type_label(feature: FeatureSpec) -> str:
    """``DOUBLE`` or, for a vector, ``DOUBLE[384]``."""
    if not feature.shape:
        return feature.dtype
    return feature.dtype + "".join(f"[{d}]" if d >= 0 else "[]" for d in feature.shape)


# ---------------------------------------------------------------------------------------------
# inferring features from samples


def datatype_of_dtype(dtype: Any) -> str | None:
    """The signature type of a numpy or pandas dtype, or None for object columns (look at values)."""
    if isinstance(dtype, pd.CategoricalDtype):
        return datatype_of_dtype(dtype.categories.dtype) or "STRING"
    if isinstance(dtype, pd.StringDtype):
        return "STRING"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "TIMESTAMP_NTZ"
    numpy_dtype = getattr(dtype, "numpy_dtype", dtype)  # pandas' nullable Int64, Float64, boolean
    try:
        numpy_dtype = np.dtype(numpy_dtype)
    except TypeError:
        return None
    if numpy_dtype.kind == "M":
        return "TIMESTAMP_NTZ"
    if numpy_dtype.kind == "U":
        return "STRING"
    if numpy_dtype.kind == "S":
        return "BYTES"
    return _DATATYPE_OF_NUMPY.get(numpy_dtype.name)


def _datatype_of_value(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return "BOOL"
    if isinstance(value, (int, np.integer)):
        return datatype_of_dtype(np.asarray(value).dtype) if isinstance(value, np.integer) else "INT64"
    if isinstance(value, (float, np.floating)):
        return datatype_of_dtype(np.asarray(value).dtype) if isinstance(value, np.floating) else "DOUBLE"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, (bytes, bytearray)):
        return "BYTES"
    if isinstance(value, (dt.datetime, dt.date, np.datetime64)):
        return "TIMESTAMP_NTZ"
    return None


def feature_from_series(name: str, series: pd.Series) -> FeatureSpec:
    """Infer a feature from a sample column: its dtype, or for object columns its values."""
    datatype = datatype_of_dtype(series.dtype)
    if datatype is not None:
        return FeatureSpec(name, datatype)
    present = [v for v in series.head(100).tolist() if not is_missing(v)]
    if not present:
        raise ValueError(f"column {name!r}: every sample value is missing, so its type cannot be inferred")
    first = present[0]
    if isinstance(first, (list, tuple, np.ndarray)):
        return _vector_feature(name, present)
    datatype = _datatype_of_value(first)
    if datatype is None:
        raise ValueError(
            f"column {name!r}: values of type {type(first).__name__} are not supported; "
            "use numbers, booleans, strings, bytes, timestamps or lists of numbers"
        )
    return FeatureSpec(name, datatype)


def _vector_feature(name: str, values: list[Any]) -> FeatureSpec:
    arrays = [np.asarray(v) for v in values]
    first = arrays[0]
    if first.dtype == object or first.ndim == 0:
        raise ValueError(f"column {name!r}: vector values must be lists of numbers, got {_short(values[0])}")
    datatype = "STRING" if first.dtype.kind == "U" else datatype_of_dtype(first.dtype)
    if datatype is None:
        raise ValueError(f"column {name!r}: vectors of {first.dtype} are not supported")
    shape = list(first.shape)
    for array in arrays[1:]:
        if array.ndim != len(shape):
            raise ValueError(f"column {name!r}: vector values have different numbers of dimensions")
        shape = [d if d == other else -1 for d, other in zip(shape, array.shape)]
    return FeatureSpec(name, datatype, shape)


def features_from_frame(frame: pd.DataFrame) -> list[FeatureSpec]:
    return [feature_from_series(str(column), frame[column]) for column in frame.columns]


# ---------------------------------------------------------------------------------------------
# coercing values to a feature's type


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


class _Context:
    """Who is asking: an argument (the client's fault, 400) or an output (the model's fault, 500)."""

    def __init__(
        self, feature: FeatureSpec, role: str, ids: Sequence[Any] | np.ndarray | None, position: int | None
    ) -> None:
        self.feature = feature
        self.role = role
        self.ids = ids
        self.position = position

    @property
    def error(self) -> type[ServerError]:
        return ModelError if self.role == "output" else ProtocolError

    @property
    def subject(self) -> str:
        where = f" (position {self.position})" if self.position is not None else ""
        return f"{self.role} {self.feature.name}{where}"

    def bad_value(self, value: Any, row: int, detail: str = "") -> ServerError:
        if self.ids is not None and row < len(self.ids):
            at = f" in the row with index {self.ids[row]}"
        else:
            at = f" in row {row}"
        why = f" ({detail})" if detail else ""
        return self.error(
            f"{self.subject} expects {type_label(self.feature)}, got {_short(value)} ({type(value).__name__}){at}{why}"
        )


def _as_object_array(values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _as_1d(values: Sequence[Any]) -> np.ndarray:
    """Values as a 1-D numpy array, letting numpy pick the dtype; object dtype when it cannot."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        return _as_object_array(values)
    if array.ndim != 1:
        return _as_object_array(values)
    if array.dtype.kind in "US" and not all(isinstance(v, (str, bytes, np.str_, np.bytes_)) for v in values):
        return _as_object_array(values)  # numpy turned a mix of numbers and strings into strings
    return array


def coerce_values(
    values: Sequence[Any],
    feature: FeatureSpec,
    *,
    role: str = "argument",
    ids: Sequence[Any] | np.ndarray | None = None,
    position: int | None = None,
) -> pd.Series:
    """Python values (from JSON, or a column's ``tolist()``) as a pandas column of the feature's type.

    Missing values (None, NaN, NA) stay missing: NaN in float columns, NA in nullable integer and
    boolean columns, None in string, bytes and vector columns, NaT in timestamp columns.
    """
    ctx = _Context(feature, role, ids, position)
    if feature.shape:
        return _coerce_vectors(values, ctx)
    if feature.dtype in INTEGER_TYPES:
        return _coerce_integers(_as_1d(values), ctx)
    if feature.dtype in FLOAT_TYPES:
        return _coerce_floats(_as_1d(values), ctx)
    if feature.dtype == "BOOL":
        return _coerce_bools(_as_1d(values), ctx)
    if feature.dtype == "STRING":
        return _coerce_strings(values, ctx)
    if feature.dtype == "BYTES":
        return _coerce_bytes(values, ctx)
    return _coerce_timestamps(values, ctx)


def _first_non_number(array: np.ndarray, ctx: _Context) -> ServerError:
    for row, value in enumerate(array.tolist()):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            if not is_missing(value):
                return ctx.bad_value(value, row)
    return ctx.error(f"{ctx.subject} expects {type_label(ctx.feature)}, got values of type {array.dtype}")


def _number_objects(array: np.ndarray, ctx: _Context) -> tuple[list[Any], np.ndarray]:
    """Validate an object array of numbers and missing values; return the values and the missing mask."""
    values = array.tolist()
    missing = np.zeros(len(values), dtype=bool)
    for row, value in enumerate(values):
        if is_missing(value):
            missing[row] = True
        elif isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise ctx.bad_value(value, row)
    return values, missing


def _coerce_floats(array: np.ndarray, ctx: _Context) -> pd.Series:
    target = FLOAT_TYPES[ctx.feature.dtype]
    if array.dtype.kind in "iuf":
        return pd.Series(array.astype(target, copy=False))
    if array.dtype.kind != "O":
        raise _first_non_number(array, ctx)
    values, missing = _number_objects(array, ctx)
    floats = np.array([math.nan if m else v for v, m in zip(values, missing)], dtype=np.float64)
    return pd.Series(floats.astype(target, copy=False))


def _coerce_integers(array: np.ndarray, ctx: _Context) -> pd.Series:
    target = INTEGER_TYPES[ctx.feature.dtype]
    info = np.iinfo(target)
    if array.dtype.kind in "iu":
        if len(array) and (array.min() < info.min or array.max() > info.max):
            row = int(np.flatnonzero((array < info.min) | (array > info.max))[0])
            raise ctx.bad_value(array[row].item(), row, f"out of range {info.min}..{info.max}")
        return pd.Series(array.astype(target, copy=False))
    if array.dtype.kind == "f":
        missing = np.isnan(array)
        values: list[Any] = array.tolist()
    elif array.dtype.kind == "O":
        values, missing = _number_objects(array, ctx)
    else:
        raise _first_non_number(array, ctx)
    integers: list[Any] = []
    for row, (value, is_na) in enumerate(zip(values, missing)):
        if is_na:
            integers.append(None)
            continue
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or not float(value).is_integer():
                raise ctx.bad_value(value, row, "not a whole number")
            value = int(value)
        value = int(value)
        if value < info.min or value > info.max:
            raise ctx.bad_value(value, row, f"out of range {info.min}..{info.max}")
        integers.append(value)
    if missing.any():
        return pd.Series(pd.array(integers, dtype=NULLABLE_DTYPES[ctx.feature.dtype]))
    return pd.Series(np.array(integers, dtype=target))


def _coerce_bools(array: np.ndarray, ctx: _Context) -> pd.Series:
    if array.dtype.kind == "b":
        return pd.Series(array)
    values = array.tolist()
    missing = False
    for row, value in enumerate(values):
        if is_missing(value):
            missing = True
        elif not isinstance(value, (bool, np.bool_)):
            raise ctx.bad_value(value, row)
    if missing:
        return pd.Series(pd.array([None if is_missing(v) else bool(v) for v in values], dtype="boolean"))
    return pd.Series(np.array(values, dtype=bool))


def _coerce_strings(values: Sequence[Any], ctx: _Context) -> pd.Series:
    cleaned: list[Any] = list(values)
    for row, value in enumerate(cleaned):
        if not isinstance(value, str):
            if not is_missing(value):
                raise ctx.bad_value(value, row)
            cleaned[row] = None
    return pd.Series(cleaned, dtype=object)


def _coerce_bytes(values: Sequence[Any], ctx: _Context) -> pd.Series:
    cleaned: list[Any] = []
    for row, value in enumerate(values):
        if isinstance(value, (bytes, bytearray, memoryview)):
            cleaned.append(bytes(value))
        elif isinstance(value, str):  # JSON carries binary values as hex
            try:
                cleaned.append(bytes.fromhex(value))
            except ValueError:
                raise ctx.bad_value(value, row, "binary values travel as hex strings in JSON") from None
        elif is_missing(value):
            cleaned.append(None)
        else:
            raise ctx.bad_value(value, row)
    return pd.Series(cleaned, dtype=object)


def _coerce_timestamps(values: Sequence[Any], ctx: _Context) -> pd.Series:
    cleaned: list[Any] = []
    for row, value in enumerate(values):
        if is_missing(value):
            cleaned.append(None)
        elif isinstance(value, (str, dt.date, np.datetime64)):
            cleaned.append(value)
        else:
            raise ctx.bad_value(value, row, "timestamps travel as ISO 8601 strings in JSON")
    for row, value in enumerate(cleaned):
        if value is None:
            continue
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ctx.bad_value(value, row, str(exc)) from None
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        cleaned[row] = stamp
    return pd.Series(pd.to_datetime(pd.Series(cleaned, dtype=object)))


def _element_dtype(feature: FeatureSpec) -> Any:
    if feature.dtype in NUMERIC_TYPES:
        return NUMERIC_TYPES[feature.dtype]
    if feature.dtype == "BOOL":
        return np.dtype(bool)
    return np.dtype(object)


def _coerce_vectors(values: Sequence[Any], ctx: _Context) -> pd.Series:
    shape = ctx.feature.shape or []
    element = _element_dtype(ctx.feature)
    cleaned: list[Any] = []
    for row, value in enumerate(values):
        if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and is_missing(value)):
            cleaned.append(None)
            continue
        if not isinstance(value, (list, tuple, np.ndarray)):
            raise ctx.bad_value(value, row, "expected a list")
        try:
            array = np.asarray(value, dtype=element)
        except (ValueError, TypeError) as exc:
            raise ctx.bad_value(value, row, str(exc)) from None
        if array.ndim != len(shape) or any(
            want >= 0 and want != got for want, got in zip(shape, array.shape)
        ):
            raise ctx.bad_value(value, row, f"shape {list(array.shape)}, expected {shape}")
        cleaned.append(array)
    return pd.Series(cleaned, dtype=object)


def _dtype_matches(dtype: Any, feature: FeatureSpec) -> bool:
    """True when a pandas column already has the feature's type (no per-value work needed)."""
    if feature.shape:
        return False
    if feature.dtype in NUMERIC_TYPES:
        return dtype == NUMERIC_TYPES[feature.dtype] or str(dtype) == NULLABLE_DTYPES.get(feature.dtype)
    if feature.dtype == "BOOL":
        return dtype == np.dtype(bool) or str(dtype) == "boolean"
    if feature.dtype == "STRING":
        return isinstance(dtype, pd.StringDtype)
    if feature.dtype == "TIMESTAMP_NTZ":
        return isinstance(dtype, np.dtype) and dtype.kind == "M"
    return False


def dtype_matches(dtype: Any, feature: FeatureSpec) -> bool:
    """Whether a pandas column of ``dtype`` already has the feature's type."""
    return _dtype_matches(dtype, feature)


def coerce_series(
    series: pd.Series | np.ndarray,
    feature: FeatureSpec,
    *,
    role: str = "argument",
    ids: Sequence[Any] | np.ndarray | None = None,
    position: int | None = None,
) -> pd.Series:
    """A pandas column (or a 1-D array) converted to the feature's type (returned as is when it
    already has it)."""
    series = pd.Series(series) if isinstance(series, np.ndarray) else series.reset_index(drop=True)
    if _dtype_matches(series.dtype, feature):
        return series
    is_number_column = series.dtype.kind in "iuf" if isinstance(series.dtype, np.dtype) else False
    if is_number_column and feature.dtype in FLOAT_TYPES and not feature.shape:
        return series.astype(FLOAT_TYPES[feature.dtype])
    if is_number_column and feature.dtype in INTEGER_TYPES and not feature.shape:
        return coerce_values(series.to_numpy(), feature, role=role, ids=ids, position=position)
    return coerce_values(series.tolist(), feature, role=role, ids=ids, position=position)


def empty_series(feature: FeatureSpec) -> pd.Series:
    """A zero-row column of the feature's type."""
    return coerce_values([], feature, role="output")


# ---------------------------------------------------------------------------------------------
# outputs: JSON values and Arrow arrays


def _vector_json(value: Any, non_finite: bool = False) -> Any:
    array = np.asarray(value)
    if array.dtype.kind == "f" and not non_finite and not np.isfinite(array).all():
        return _clean_nonfinite(array.tolist())
    return array.tolist()


def _clean_nonfinite(value: Any) -> Any:
    if isinstance(value, list):
        return [_clean_nonfinite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json_values(series: pd.Series | np.ndarray, feature: FeatureSpec, *, role: str = "output",
                   non_finite: bool = False) -> list[Any]:
    """A column as JSON-ready Python values: missing values (and NaN, ±inf) become None; with
    ``non_finite``, a floating column's NaN and ±inf stay floats (MLflow's answers keep them)."""
    if isinstance(series, np.ndarray) and series.ndim == 1 and not feature.shape:
        fast = _plain_json_values(series, feature, non_finite)
        if fast is not None:
            return fast
    column = coerce_series(series, feature, role=role)
    if feature.shape:
        return [None if v is None else _vector_json(v, non_finite) for v in column.tolist()]
    missing = column.isna().to_numpy()
    if feature.dtype == "TIMESTAMP_NTZ":
        values: list[Any] = column.dt.strftime("%Y-%m-%d %H:%M:%S.%f").tolist()
    elif feature.dtype == "BYTES":
        values = [v.hex() if isinstance(v, bytes) else v for v in column.tolist()]
    else:
        values = column.tolist()
    if feature.dtype in FLOAT_TYPES:
        floats = column.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = ~np.isfinite(floats)
        if non_finite:
            for row in np.flatnonzero(missing):
                values[row] = float(floats[row])
            return values
    for row in np.flatnonzero(missing):
        values[row] = None
    return values


def _plain_json_values(array: np.ndarray, feature: FeatureSpec, non_finite: bool = False) -> list[Any] | None:
    """The hot path of `to_json_values`: a numeric or boolean array that already fits the feature."""
    kind = array.dtype.kind
    if feature.dtype in FLOAT_TYPES and kind in "fiu":
        floats = array.astype(FLOAT_TYPES[feature.dtype], copy=False)
        values: list[Any] = floats.tolist()
        if kind == "f" and not non_finite:
            for row in np.flatnonzero(~np.isfinite(floats)):
                values[row] = None
        return values
    if feature.dtype in INTEGER_TYPES and kind in "iu":
        info = np.iinfo(INTEGER_TYPES[feature.dtype])
        if len(array) and (array.min() < info.min or array.max() > info.max):
            return None
        return array.tolist()
    if feature.dtype == "BOOL" and kind == "b":
        return array.tolist()
    return None


def arrow_type(feature: FeatureSpec) -> pa.DataType:
    """The Arrow type of a feature: vectors are (nested) lists."""
    import pyarrow as pa

    scalar = {
        "INT8": pa.int8(),
        "INT16": pa.int16(),
        "INT32": pa.int32(),
        "INT64": pa.int64(),
        "UINT8": pa.uint8(),
        "UINT16": pa.uint16(),
        "UINT32": pa.uint32(),
        "UINT64": pa.uint64(),
        "FLOAT": pa.float32(),
        "DOUBLE": pa.float64(),
        "BOOL": pa.bool_(),
        "STRING": pa.string(),
        "BYTES": pa.binary(),
        "TIMESTAMP_NTZ": pa.timestamp("us"),
    }[feature.dtype]
    for _ in feature.shape or ():
        scalar = pa.list_(scalar)
    return scalar


def to_arrow_array(series: pd.Series, feature: FeatureSpec, *, role: str = "output") -> pa.Array:
    """A column as an Arrow array of the feature's type; NaN becomes null, as in the JSON form."""
    import pyarrow as pa

    column = coerce_series(series, feature, role=role)
    target = arrow_type(feature)
    try:
        if feature.shape:
            return _vectors_to_arrow(column.tolist(), target)
        if feature.dtype == "TIMESTAMP_NTZ":
            return pa.array(column).cast(target, safe=False)
        return pa.array(column, type=target, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise _Context(feature, role, None, None).error(
            f"{role} {feature.name} cannot be sent as {type_label(feature)}: {exc}"
        ) from exc


def _vectors_to_arrow(rows: list[Any], target: pa.DataType) -> pa.Array:
    import pyarrow as pa

    shapes = {None if v is None else np.shape(v) for v in rows}
    shape = next(iter(shapes)) if len(shapes) == 1 else None
    if shape is not None and len(shape) == 1:
        # equal-length 1-D vectors: one flat buffer plus offsets instead of one Python list per row
        width = shape[0]
        flat = pa.array(np.stack(rows).ravel(), from_pandas=True)
        offsets = pa.array(np.arange(0, len(rows) * width + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, flat).cast(target)
    return pa.array([None if v is None else v.tolist() for v in rows], type=target, from_pandas=True)


def _arrow_type_fits(source: pa.DataType, feature: FeatureSpec) -> bool:
    import pyarrow.types as t

    if t.is_null(source):
        return True
    if feature.shape:
        return t.is_list(source) or t.is_large_list(source) or t.is_fixed_size_list(source)
    if feature.dtype in NUMERIC_TYPES:
        return t.is_integer(source) or t.is_floating(source) or t.is_decimal(source)
    if feature.dtype == "BOOL":
        return bool(t.is_boolean(source))
    if feature.dtype == "STRING":
        return t.is_string(source) or t.is_large_string(source) or str(source) == "string_view"
    if feature.dtype == "BYTES":
        return t.is_binary(source) or t.is_large_binary(source) or t.is_fixed_size_binary(source)
    return t.is_timestamp(source) or t.is_date(source)


def arrow_to_series(
    column: pa.Array | pa.ChunkedArray,
    feature: FeatureSpec,
    *,
    role: str = "argument",
    ids: Sequence[Any] | np.ndarray | None = None,
    position: int | None = None,
) -> pd.Series:
    """An Arrow column converted to a pandas column of the feature's type."""
    import pyarrow as pa

    ctx = _Context(feature, role, ids, position)
    if not _arrow_type_fits(column.type, feature):
        raise ctx.error(
            f"{ctx.subject} expects {type_label(feature)}, got an Arrow column of type {column.type}"
        )
    target = arrow_type(feature)
    if feature.dtype == "TIMESTAMP_NTZ" and pa.types.is_timestamp(column.type) and column.type.tz is not None:
        column = column.cast(pa.timestamp(column.type.unit))
    try:
        column = column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ctx.error(f"{ctx.subject} expects {type_label(feature)}: {exc}") from None
    if not feature.shape and column.null_count and feature.dtype in NULLABLE_DTYPES:
        nullable = pd.api.types.pandas_dtype(NULLABLE_DTYPES[feature.dtype])
        series = column.to_pandas(types_mapper=lambda _type: nullable)
    else:
        series = column.to_pandas()
    return coerce_series(series, feature, role=role, ids=ids, position=position)
