"""MLflow's scoring protocol (``POST /invocations``), as MLflow's own scoring server and Databricks
model serving speak it, without MLflow: a model environment has no MLflow unless the model does.

Request bodies (content type ``application/json``), exactly one of::

    {"dataframe_split": {"columns": [...], "data": [[...], ...], "index": [...]}}   columns optional
    {"dataframe_records": [{"col": value, ...}, ...]}
    {"instances": [{"col": value, ...}, ...]}  or  [[v1, v2, ...], ...]  or  [v, ...] (one input)
                                               (for one vector input, as an MLflow tensor signature
                                               has, each row of any format is that input's vector)
    {"inputs": {"col": [values...], ...}}  or  {"col": value, ...} (one row)  or rows as for instances

plus an optional ``"params"`` (passed to the model: an MLflow model checks them against its
signature's parameters, a custom model against its method's keyword-only parameters; other models
ignore them with a warning, as MLflow does for a model without parameters), or CSV (``text/csv``,
a header row of input names), or Parquet (``application/vnd.apache.parquet``). The answer is
``{"predictions": [...]}``. An MLflow model's answer is written as MLflow writes it, whatever its
signature says (`encode_native`): an array as nested lists, a DataFrame or Series as records,
anything else as it is. Other models' answers follow their signature: one value per row for a
method with one output, a list per row for several positional outputs (``output_feature_0``,
``output_feature_1``, ... as a 2-D array gives them), an object per row for several named outputs
(as a DataFrame gives them). NaN and infinities are written ``NaN``, ``Infinity``, ``-Infinity``
as MLflow's encoder writes them.

Errors answer MLflow's body ``{"error_code": "BAD_REQUEST", "message": "...", "sqlstate": ...,
"error_class": ...}``: 400 for a request that does not decode or fit the signature, and for an
exception raised by the model (MLflow's message, with ``stack_trace``); an MLflow model's own
refusals (its schema and parameter checks) with MLflow's status and body; 415 for a content type or
charset MLflow does not read. Two deliberate differences: a request without a content type is read
as JSON (MLflow answers 500), and media types are matched case-insensitively (RFC 9110).
"""

from __future__ import annotations

import csv
import io
import json
import re
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from duckserve.inference_server.decoding import (
    Inputs,
    all_float,
    frame_from_columns,
    frame_from_records,
    frame_from_rows,
    input_names,
    split_matrix,
)
from duckserve.inference_server.errors import (
    InvalidParameters,
    MissingInput,
    ModelError,
    ModelRefused,
    ProtocolError,
    ServerError,
)
from duckserve.inference_server.manifest import FeatureSpec, MethodSpec

if TYPE_CHECKING:
    from duckserve.inference_server.handlers.base import Outputs

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CSV_CONTENT_TYPE = "text/csv"
JSON_CONTENT_TYPE = "application/json"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
CONTENT_TYPES = [CSV_CONTENT_TYPE, JSON_CONTENT_TYPE, PARQUET_CONTENT_TYPE]  # in MLflow's order, for its message
REQUIRED_INPUT_FORMAT = ("The input must be a JSON dictionary with exactly one of the input fields "
                         "{'dataframe_split', 'dataframe_records', 'instances', 'inputs'}")
MODEL_RAISED = ("Encountered an unexpected error while evaluating the model. Verify that the serialized input "
                "Dataframe is compatible with the model for inference.")
_POSITIONAL = re.compile(r"output_feature_\d+")
#: MLflow's error_code for our statuses (its HTTP_STATUS_TO_ERROR_CODE)
ERROR_CODES = {400: "BAD_REQUEST", 404: "ENDPOINT_NOT_FOUND", 415: "BAD_REQUEST", 429: "RESOURCE_EXHAUSTED",
               503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
#: the sqlstate and error_class MLflow 3 derives from an error_code (absent for the others)
ERROR_CLASSES = {"BAD_REQUEST": ("KAM00", "INVALID_PARAMETER_VALUE"),
                 "INVALID_PARAMETER_VALUE": ("KAM00", "INVALID_PARAMETER_VALUE"),
                 "ENDPOINT_NOT_FOUND": ("KAM00", "RESOURCE_NOT_FOUND"),
                 "TEMPORARILY_UNAVAILABLE": ("XXM00", "CLIENT_INTERNAL_ERROR"),
                 "INTERNAL_ERROR": ("XXM00", "CLIENT_INTERNAL_ERROR")}
#: MLflow's error_class for an input that does not fit the signature's columns
SCHEMA_ENFORCEMENT_FAILED = "SCHEMA_ENFORCEMENT_FAILED"


class UnsupportedMediaType(ProtocolError):
    """The request's content type is not JSON, CSV or Parquet, is not UTF-8, or has parameters
    other than charset (MLflow's 415s)."""

    status_code = 415


def error_code(exc: ServerError) -> str:
    """MLflow's error_code for one of our errors."""
    if isinstance(exc, (InvalidParameters, MissingInput)):
        return "INVALID_PARAMETER_VALUE"
    return ERROR_CODES.get(exc.status_code, "INTERNAL_ERROR")


def mlflow_error(code: str, message: str, error_class: str | None = None, **extra: Any) -> dict[str, Any]:
    """MLflow's error body: ``error_code``, ``message``, and the ``sqlstate`` and ``error_class``
    MLflow derives from the code (or from ``error_class``)."""
    fields: dict[str, Any] = {"error_code": code, "message": message}
    if error_class == SCHEMA_ENFORCEMENT_FAILED:
        fields["sqlstate"], fields["error_class"] = "KAM01", error_class
    elif code in ERROR_CLASSES:
        fields["sqlstate"], fields["error_class"] = ERROR_CLASSES[code]
    return {**fields, **extra}


def error_answer(exc: ServerError) -> tuple[int, bytes]:
    """The status and body MLflow's scoring server answers for the same failure: the model's own
    exception is the client's 400 there (its input did not suit the model), with the traceback."""
    if isinstance(exc, ModelRefused):
        return exc.status_code, json.dumps(exc.fields).encode()
    cause = exc.__cause__
    if isinstance(exc, ModelError) and cause is not None:
        trace = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        return 400, json.dumps(mlflow_error("BAD_REQUEST", MODEL_RAISED, stack_trace=trace)).encode()
    error_class = SCHEMA_ENFORCEMENT_FAILED if isinstance(exc, MissingInput) else None
    return exc.status_code, json.dumps(mlflow_error(error_code(exc), str(exc), error_class)).encode()


def _media_type(content_type: str | None) -> str:
    """The request's media type, refused as MLflow refuses it: a charset other than UTF-8,
    parameters other than charset, a type other than CSV, JSON and Parquet."""
    if not content_type:
        return JSON_CONTENT_TYPE
    parts = [p.strip() for p in content_type.split(";")]
    mime = parts[0].lower()
    unknown = []
    for parameter in parts[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset":
            unknown.append(key.strip()[:40])
        elif value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType("The scoring server only supports UTF-8")
    if unknown:
        raise UnsupportedMediaType(f"Unrecognized content type parameters: {', '.join(unknown)}. The scoring "
                                   "protocol takes only a charset (utf-8)")
    if mime not in CONTENT_TYPES:
        raise UnsupportedMediaType(f"This predictor only supports the following content types: Types: "
                                   f"{CONTENT_TYPES}. Got '{content_type[:100]}'.")
    return mime


def loads(body: bytes) -> Any:
    """JSON as MLflow's server reads it (Python's json: NaN and Infinity are numbers)."""
    return json.loads(body)


def decode_invocation(body: bytes, content_type: str | None, method: MethodSpec) -> tuple[Inputs, Any]:
    """The request as the method's inputs and the request's ``params`` as sent (None without them:
    the model's handler checks them)."""
    media_type = _media_type(content_type)
    if media_type == CSV_CONTENT_TYPE:
        return _decode_csv(body, method), None
    if media_type == PARQUET_CONTENT_TYPE:
        return _decode_parquet(body, method), None
    if all_float(method):
        split = split_matrix(body, b"data", len(method.inputs))
        if split is not None:
            fast = _split_of_block(split, method)
            if fast is not None:
                return fast
    try:
        payload = loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"Ensure that input is a valid JSON formatted string. Error: '{exc}'") from None
    if not isinstance(payload, dict):
        got = "a list" if isinstance(payload, list) else f"unexpected input type '{type(payload).__name__}'"
        raise ProtocolError(f"{REQUIRED_INPUT_FORMAT}. Received {got}.")
    present = [key for key in FORMATS if key in payload]
    if len(present) != 1:
        raise ProtocolError(f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: "
                            f"{list(payload)[:20]}.")
    params = payload.get("params")
    key = present[0]
    value = payload[key]
    vector = _one_vector_input(method)
    if vector is not None:
        value = _rows_as_vectors(value, vector, key)
    if key == "dataframe_split":
        return _as_pandas_casts(lambda v: _decode_split(v, method, body), value, method, key), params
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise ProtocolError(f"Dataframe records format must be a list of records. Got "
                                f"{'dictionary' if isinstance(value, dict) else type(value).__name__}.")
        return _as_pandas_casts(lambda v: frame_from_records(v, method, key), value, method, key), params
    return _decode_tensor_style(value, method, key, body), params


def _one_vector_input(method: MethodSpec) -> FeatureSpec | None:
    """The input of a method whose only input is one vector (an MLflow model's tensor signature,
    ``Tensor('float64', (-1, 3))``), else None."""
    if len(method.inputs) == 1 and method.inputs[0].shape is not None and len(method.inputs[0].shape) == 1:
        return method.inputs[0]
    return None


def _is_row(value: Any) -> bool:
    return type(value) is list and (not value or not isinstance(value[0], (list, dict)))


def _rows_as_vectors(value: Any, feature: FeatureSpec, key: str) -> Any:
    """For a method of one vector input, a request that gives each row's values as a row (a list of
    numbers, a DataFrame's row), as MLflow turns such a frame or list into the one tensor: each row
    becomes that input's vector. Anything else unchanged."""
    name = feature.name.lower()
    if key in ("instances", "inputs"):
        if isinstance(value, list) and value and all(_is_row(row) for row in value):
            return [[row] for row in value]
        return value
    if key == "dataframe_records":
        if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
            return value
        if any(str(k).lower() == name for record in value for k in record):
            return value
        keys = list(dict.fromkeys(k for record in value for k in record))
        return [{feature.name: [record.get(k) for k in keys]} for record in value]
    if isinstance(value, dict) and isinstance(value.get("data"), list) and value["data"]:
        columns = value.get("columns")
        if isinstance(columns, list) and any(str(c).lower() == name for c in columns):
            return value
        if all(_is_row(row) for row in value["data"]):
            return {**value, "columns": [feature.name], "data": [[row] for row in value["data"]]}
    return value


def _as_pandas_casts(decode: Callable[[Any], Inputs], value: Any, method: MethodSpec, key: str) -> Inputs:
    """``decode(value)``; when that fails, once more with numeric text and booleans in numeric
    inputs turned into numbers, as MLflow's ``astype`` to the signature's types turns them for the
    DataFrame formats (``"1.5"`` and ``true`` are a double's 1.5 and 1.0 there). The first error
    stands when the second try fails too."""
    try:
        return decode(value)
    except MissingInput:
        raise
    except ProtocolError as first:
        cast = _numbers_from_text(value, method, key)
        if cast is None:
            raise
        try:
            return decode(cast)
        except ProtocolError:
            raise first from None


def _numbers_from_text(value: Any, method: MethodSpec, key: str) -> Any:
    """The DataFrame-format value with numeric inputs' strings and booleans cast; None when the
    shape is unusual or nothing is cast."""
    from duckserve.inference_server.datatypes import FLOAT_TYPES, INTEGER_TYPES

    kinds = {f.name.lower(): float if f.dtype in FLOAT_TYPES else int for f in method.inputs
             if not f.shape and (f.dtype in FLOAT_TYPES or f.dtype in INTEGER_TYPES)}
    changed = [False]

    def cast(cell: Any, kind: type | None) -> Any:
        if kind is None or not isinstance(cell, (str, bool)):
            return cell
        try:
            number = kind(cell)
        except (ValueError, OverflowError):
            return cell
        changed[0] = True
        return number

    if key == "dataframe_records":
        if not all(isinstance(record, dict) for record in value):
            return None
        records = [{k: cast(v, kinds.get(str(k).lower())) for k, v in record.items()} for record in value]
        return records if changed[0] else None
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        return None
    columns = value.get("columns")
    names = columns if isinstance(columns, list) else [f.name for f in method.inputs]
    row_kinds = [kinds.get(str(name).lower()) for name in names]
    data = [[cast(cell, row_kinds[j] if j < len(row_kinds) else None) for j, cell in enumerate(row)]
            if type(row) is list else row for row in value["data"]]
    return {**value, "data": data} if changed[0] else None


def _split_of_block(split: tuple[bytes, Any], method: MethodSpec) -> tuple[Inputs, Any] | None:
    """A ``dataframe_split`` whose data `split_matrix` read as one block: its columns put in the
    signature's order (None when the rest of the request is not that simple)."""
    rest, block = split
    try:
        payload = loads(rest)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    value = payload.get("dataframe_split") if isinstance(payload, dict) else None
    if (not isinstance(value, dict) or value.get("data") != [] or set(value) - {"columns", "data"}
            or [k for k in FORMATS if k in payload] != ["dataframe_split"]):
        return None
    params = payload.get("params")
    columns = value.get("columns")
    if columns is None:
        return Inputs(method, block=block), params
    if not isinstance(columns, list) or len(columns) != block.shape[1]:
        return None
    folded = [str(c).lower() for c in columns]
    if len(set(folded)) != len(folded):
        return None
    try:
        order = [folded.index(f.name.lower()) for f in method.inputs]
    except ValueError:
        return None
    return Inputs(method, block=block if order == list(range(len(order))) else block[:, order]), params


def _decode_split(value: Any, method: MethodSpec, body: bytes) -> Inputs:
    if not isinstance(value, dict):
        raise ProtocolError(f"Dataframe split format must be a dictionary. Got "
                            f"{'list' if isinstance(value, list) else type(value).__name__}.")
    keys = set(value)
    if "data" not in keys or keys - {"columns", "data", "index"}:
        raise ProtocolError(f"Dataframe split format must have 'data' field and optionally 'columns' and "
                            f"'index' fields. Got {sorted(keys)}.")
    data, columns = value["data"], value.get("columns")
    if not isinstance(data, list):
        raise ProtocolError(f"dataframe_split 'data' must be a list of rows, got {type(data).__name__}")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, (str, int)) for c in columns)):
        raise ProtocolError("dataframe_split 'columns' must be a list of column names")
    index = value.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise ProtocolError(f"dataframe_split 'index' must be a list of {len(data)} labels, one per row")
    if data and all(type(row) is not list for row in data) and len(method.inputs) == 1:
        data = [[v] for v in data]  # one column written as a flat list
    return frame_from_rows(data, method, "dataframe_split.data", names=columns, body=body)


def _decode_tensor_style(value: Any, method: MethodSpec, key: str, body: bytes) -> Inputs:
    if isinstance(value, dict):
        if value and all(not isinstance(v, (list, tuple, dict)) for v in value.values()):
            return frame_from_records([value], method, key)  # one row given as an object of scalars
        return frame_from_columns(value, method, key)
    if not isinstance(value, list):
        raise ProtocolError(f"'{key}' must be a list of rows or an object of columns, got {type(value).__name__}")
    if not value:
        return frame_from_rows(value, method, key)
    if all(isinstance(v, dict) for v in value):
        return frame_from_records(value, method, key)
    if all(type(v) is list for v in value):
        return frame_from_rows(value, method, key, body=body)
    if len(method.inputs) == 1 and not any(isinstance(v, (list, dict)) for v in value):
        return frame_from_rows([[v] for v in value], method, key)
    raise ProtocolError(f"'{key}' must hold rows (lists of {input_names(method)}), records (objects) or "
                        "columns (an object of lists)")


def _decode_csv(body: bytes, method: MethodSpec) -> Inputs:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"Ensure that input is a valid UTF-8 encoded string. Error: '{exc}'") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise ProtocolError(f"Failed to parse input as a Pandas DataFrame: not valid CSV ({exc})") from None
    rows = [row for row in rows if row]
    if not rows:
        raise ProtocolError("Failed to parse input as a Pandas DataFrame: the CSV has no header row; "
                            f"write the column names first ({input_names(method)})")
    names, records = rows[0], rows[1:]
    for position, row in enumerate(records, start=2):
        if len(row) != len(names):
            raise ProtocolError(f"CSV line {position} has {len(row)} fields for {len(names)} columns")
    features = {f.name.lower(): f for f in method.inputs}
    columns: dict[str, list[Any]] = {}
    for j, name in enumerate(names):
        feature = features.get(name.strip().lower())
        values = [row[j] for row in records]
        columns[name.strip()] = [_csv_value(v, feature.dtype if feature else "STRING") for v in values]
    return frame_from_columns(columns, method, "CSV")


def _decode_parquet(body: bytes, method: MethodSpec) -> Inputs:
    from duckserve.inference_server.handlers.base import conform_inputs

    try:
        import pandas as pd

        frame = pd.read_parquet(io.BytesIO(body))
    except Exception as exc:  # pyarrow's errors for a body that is not Parquet, or no Parquet reader
        raise ProtocolError(f"Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid Parquet "
                            f"Pandas DataFrame produced using the `pandas.DataFrame.to_parquet()` method. "
                            f"Error: '{str(exc)[:500]}'") from None
    return Inputs(method, conform_inputs(frame, method))


def _csv_value(text: str, dtype: str) -> Any:
    """A CSV field as pandas' read_csv would read it for a column of that type (empty: missing)."""
    if text == "":
        return None
    if dtype in ("STRING", "BYTES", "TIMESTAMP_NTZ"):
        return text
    if dtype == "BOOL":
        folded = text.strip().lower()
        return True if folded == "true" else False if folded == "false" else text
    try:
        return int(text) if dtype.startswith(("INT", "UINT")) else float(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text  # the type check names it


def encode_predictions(out: Outputs, method: MethodSpec) -> bytes:
    """``{"predictions": [...]}`` for the method's outputs."""
    from duckserve.inference_server.datatypes import to_json_values
    from duckserve.inference_server.handlers.base import NativeAnswer

    if isinstance(out, NativeAnswer):
        return encode_native(out.value)
    columns = [to_json_values(out[f.name], f, non_finite=True) for f in method.outputs]
    if len(columns) == 1:
        predictions: list[Any] = columns[0]
    elif all(_POSITIONAL.fullmatch(f.name) for f in method.outputs):
        predictions = [list(row) for row in zip(*columns)]
    else:
        names = [f.name for f in method.outputs]
        predictions = [dict(zip(names, row)) for row in zip(*columns)]
    return json.dumps({"predictions": predictions}, separators=(",", ":")).encode()


def encode_native(answer: Any) -> bytes:
    """``{"predictions": ...}`` for a model's own answer, as MLflow's scoring server writes it
    (its ``_get_jsonable_obj`` and ``NumpyEncoder``)."""
    import numpy as np
    import pandas as pd

    if isinstance(answer, np.ndarray):
        answer = answer.tolist()
    elif isinstance(answer, pd.DataFrame):
        answer = answer.to_dict(orient="records")
    elif isinstance(answer, pd.Series):
        answer = pd.DataFrame(answer).to_dict(orient="records")
    try:
        return json.dumps({"predictions": answer}, default=_numpy_json).encode()
    except (TypeError, ValueError) as exc:
        raise ModelError(f"the model's answer cannot be written as JSON: {exc}") from None


def _numpy_json(value: Any) -> Any:
    """What MLflow's ``NumpyEncoder`` writes for a value json cannot (in its order of checks)."""
    import base64
    import datetime

    import numpy as np
    import pandas as pd

    if isinstance(value, np.ndarray):
        if value.dtype.kind == "S":
            return [base64.encodebytes(v).decode("ascii") for v in value.ravel().tolist()]
        return value.tolist()  # json comes back here for the elements of an object array
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return base64.encodebytes(value).decode("ascii")
    if isinstance(value, (pd.Timestamp, datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
