"""The Open Inference Protocol (KServe V2, as Triton, KServe and Seldon speak it) over HTTP/REST.

Routes (``<model>`` is the service's name, or the model's)::

    GET  /v2                               server metadata (extensions: binary_tensor_data)
    GET  /v2/health/live | /v2/health/ready
    GET  /v2/models/<model>[/versions/<v>]        model metadata from the signature
    GET  /v2/models/<model>[/versions/<v>]/ready
    POST /v2/models/<model>[/versions/<v>]/infer

Which method answers: the request's ``"parameters": {"method": "<name>"}``, else ``predict`` when
the model has it, else its first method (metadata takes ``?method=<name>`` the same way). Inputs
are matched to the method's signature by tensor name (any case), one tensor per input of shape
``[rows]`` or ``[rows, 1]`` (``[rows, *shape]`` for a vector input); a single tensor of shape
``[rows, k]`` feeds a method of k scalar inputs column by column. Outputs are one tensor per
output, ``[rows]`` for scalars. The binary tensor extension works both ways: a request whose
``Inference-Header-Content-Length`` header says how long its JSON part is carries tensors after it
(``"parameters": {"binary_data_size": n}``); outputs asked for with ``"binary_data": true`` (or
``"binary_data_output": true`` for all) come back the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from duckserve.inference_server.decoding import Inputs, empty_frame, input_names, loads
from duckserve.inference_server.errors import ModelError, ProtocolError, UnknownMethod
from duckserve.inference_server.manifest import FeatureSpec, Manifest, MethodSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from duckserve.inference_server.handlers.base import Outputs

HEADER_LENGTH = "inference-header-content-length"
BINARY_CONTENT_TYPE = "application/octet-stream"
METHOD_PARAMETER = "method"

#: signature type -> V2 datatype
DATATYPES = {
    "INT8": "INT8", "INT16": "INT16", "INT32": "INT32", "INT64": "INT64", "UINT8": "UINT8", "UINT16": "UINT16",
    "UINT32": "UINT32", "UINT64": "UINT64", "FLOAT": "FP32", "DOUBLE": "FP64", "BOOL": "BOOL",
    "STRING": "BYTES", "BYTES": "BYTES", "TIMESTAMP_NTZ": "BYTES",
}
#: V2 datatype -> numpy dtype of its binary form (little-endian)
_NUMPY = {"BOOL": "|b1", "INT8": "|i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "|u1",
          "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


def default_method(manifest: Manifest) -> MethodSpec:
    """``predict`` when the model has it, else its first method."""
    for method in manifest.methods:
        if method.name.lower() == "predict":
            return method
    return manifest.methods[0]


def choose_method(manifest: Manifest, name: Any) -> MethodSpec:
    if name is None:
        return default_method(manifest)
    if not isinstance(name, str):
        raise ProtocolError(f"parameter '{METHOD_PARAMETER}' must be a method name (a string)")
    try:
        return manifest.method(name)
    except KeyError:
        known = ", ".join(m.name for m in manifest.methods)
        raise UnknownMethod(f"model {manifest.name} has no method {name!r}; its methods: {known}") from None


def _tensor_spec(feature: FeatureSpec) -> dict[str, Any]:
    return {"name": feature.name, "datatype": DATATYPES[feature.dtype], "shape": [-1, *(feature.shape or [])]}


def model_metadata(manifest: Manifest, method: MethodSpec, name: str) -> dict[str, Any]:
    return {
        "name": name, "versions": [manifest.version], "platform": f"duckserve_{manifest.handler}",
        "inputs": [_tensor_spec(f) for f in method.inputs], "outputs": [_tensor_spec(f) for f in method.outputs],
    }


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "duckserve", "version": version, "extensions": ["binary_tensor_data"]}


@dataclass
class InferRequest:
    method: MethodSpec
    inputs: Inputs
    id: str | None = None
    #: output names to answer (all when empty), and which of them go binary
    outputs: list[str] = field(default_factory=list)
    binary: set[str] = field(default_factory=set)
    binary_all: bool = False


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise ProtocolError(f"Inference-Header-Content-Length must be an integer, got {header_length[:40]!r}") from None
    if not 0 <= length <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {length} does not fit the {len(body)}-byte body")
    return body[:length], body[length:]


def decode_infer(body: bytes, header_length: str | None, manifest: Manifest) -> InferRequest:
    """An infer request (JSON, or JSON plus binary tensors) as the chosen method's input frame."""
    head, binary = _split_body(body, header_length)
    try:
        payload = loads(head)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"the infer request is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ProtocolError('the infer request must be a JSON object {"inputs": [{"name", "shape", "datatype", '
                            '"data"}, ...]}')
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    method = choose_method(manifest, parameters.get(METHOD_PARAMETER))
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(t, dict) for t in inputs):
        raise ProtocolError(f"'inputs' must be a list of tensors; method {method.name} takes {input_names(method)}")
    tensors: list[tuple[str, np.ndarray]] = []
    offset = 0
    for position, tensor in enumerate(inputs):
        array, offset = _read_tensor(tensor, position, binary, offset)
        tensors.append((str(tensor.get("name")), array))
    if offset != len(binary):
        raise ProtocolError(f"the binary part has {len(binary) - offset} bytes that no input's binary_data_size claims")
    request = InferRequest(method, Inputs(method, _frame(tensors, method)))
    if "id" in payload:
        if not isinstance(payload["id"], str):
            raise ProtocolError("'id' must be a string")
        request.id = payload["id"]
    request.binary_all = bool(parameters.get("binary_data_output"))
    outputs = payload.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise ProtocolError("'outputs' must be a list of objects with a 'name'")
        known = {f.name.lower(): f.name for f in method.outputs}
        for wanted in outputs:
            name = known.get(wanted["name"].lower())
            if name is None:
                raise ProtocolError(f"method {method.name} has no output {wanted['name']!r}; its outputs: "
                                    f"{', '.join(known.values())}")
            request.outputs.append(name)
            options = wanted.get("parameters") or {}
            if isinstance(options, dict) and options.get("binary_data"):
                request.binary.add(name)
    return request


def _shape(tensor: dict[str, Any], position: int) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or not shape:
        raise ProtocolError(f"inputs[{position}] ({tensor.get('name')!r:.40}): 'shape' must be a list of "
                            "non-negative integers, rows first")
    if math.prod(shape) > 2**31:
        raise ProtocolError(f"inputs[{position}]: shape {shape} is too large")
    return shape


def _read_tensor(tensor: dict[str, Any], position: int, binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    import numpy as np

    name = tensor.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"inputs[{position}] has no 'name'")
    datatype = tensor.get("datatype")
    if datatype not in _NUMPY and datatype != "BYTES":
        raise ProtocolError(f"input {name!r:.40}: unknown datatype {datatype!r:.20}; use one of "
                            f"{', '.join([*_NUMPY, 'BYTES'])}")
    shape = _shape(tensor, position)
    count = math.prod(shape)
    options = tensor.get("parameters") or {}
    size = options.get("binary_data_size") if isinstance(options, dict) else None
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise ProtocolError(f"input {name!r:.40}: binary_data_size {size!r:.20} does not fit the binary part")
        raw = binary[offset:offset + size]
        offset += size
        if datatype == "BYTES":
            values = _unpack_bytes(raw, count, name)
            array = np.empty(count, dtype=object)
            array[:] = values
        else:
            dtype = np.dtype(_NUMPY[datatype])
            if size != count * dtype.itemsize:
                raise ProtocolError(f"input {name!r:.40}: {size} bytes for {count} {datatype} values "
                                    f"({count * dtype.itemsize} expected)")
            array = np.frombuffer(raw, dtype=dtype)
        return array.reshape(shape), offset
    if "data" not in tensor:
        raise ProtocolError(f"input {name!r:.40} has neither 'data' nor binary_data_size")
    data = tensor["data"]
    flat = _flatten(data, name)
    if len(flat) != count:
        raise ProtocolError(f"input {name!r:.40}: {len(flat)} values for shape {shape} ({count} expected)")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"input {name!r:.40}: BYTES data must be strings")
        array = np.empty(count, dtype=object)
        array[:] = flat
    elif datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise ProtocolError(f"input {name!r:.40}: BOOL data must be true or false")
        array = np.array(flat, dtype=bool)
    else:
        if not all(type(v) in (int, float) for v in flat):
            bad = next(v for v in flat if type(v) not in (int, float))
            raise ProtocolError(f"input {name!r:.40}: {datatype} data must be numbers, got {bad!r:.40}")
        try:
            array = np.array(flat, dtype=np.dtype(_NUMPY[datatype]))
        except (OverflowError, ValueError) as exc:
            raise ProtocolError(f"input {name!r:.40}: a value does not fit {datatype}: {exc}") from None
    return array.reshape(shape), offset


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r:.40}: 'data' must be a list")
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) > 32:
                    raise ProtocolError(f"input {name!r:.40}: 'data' is nested too deeply")
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _unpack_bytes(raw: bytes, count: int, name: str) -> list[bytes]:
    values: list[bytes] = []
    position = 0
    for _ in range(count):
        if position + 4 > len(raw):
            raise ProtocolError(f"input {name!r:.40}: the binary BYTES data ends early")
        length = int.from_bytes(raw[position:position + 4], "little")
        position += 4
        if position + length > len(raw):
            raise ProtocolError(f"input {name!r:.40}: the binary BYTES data ends early")
        values.append(raw[position:position + length])
        position += length
    if position != len(raw):
        raise ProtocolError(f"input {name!r:.40}: binary BYTES data has {len(raw) - position} bytes left over")
    return values


def _frame(tensors: list[tuple[str, np.ndarray]], method: MethodSpec) -> pd.DataFrame:
    import pandas as pd

    by_name = {n.lower(): a for n, a in tensors}
    features = method.inputs
    if all(f.name.lower() in by_name for f in features):
        columns = {f.name: _column(by_name[f.name.lower()], f, j) for j, f in enumerate(features, start=1)}
    elif (len(tensors) == 1 and tensors[0][1].ndim == 2 and tensors[0][1].shape[1] == len(features)
          and all(not f.shape for f in features)):
        matrix = tensors[0][1]
        columns = {f.name: _column(matrix[:, j], f, j + 1) for j, f in enumerate(features)}
    else:
        raise ProtocolError(f"method {method.name} takes the inputs {input_names(method)} (one tensor each, "
                            f"or one [rows, {len(features)}] tensor); got {', '.join(n for n, _ in tensors) or 'none'}")
    lengths = {len(c) for c in columns.values()}
    if len(lengths) > 1:
        raise ProtocolError(f"the input tensors have different numbers of rows ({sorted(lengths)})")
    if not columns or not lengths or lengths == {0}:
        return empty_frame(method)
    return pd.DataFrame(columns, index=pd.RangeIndex(lengths.pop()))


def _column(array: np.ndarray, feature: FeatureSpec, position: int) -> pd.Series:
    from duckserve.inference_server.datatypes import coerce_values

    want = len(feature.shape or [])
    if array.ndim == want + 2 and array.shape[-1] == 1 and not feature.shape:
        array = array.reshape(array.shape[0])
    if array.ndim != want + 1:
        raise ProtocolError(f"input {feature.name}: shape {list(array.shape)} does not fit "
                            f"{DATATYPES[feature.dtype]}{[-1, *(feature.shape or [])]}")
    if array.dtype == object:  # BYTES
        if feature.dtype not in ("STRING", "BYTES", "TIMESTAMP_NTZ"):
            raise ProtocolError(f"input {feature.name} expects {DATATYPES[feature.dtype]}, got BYTES")
        values: list[Any] = list(array)
        if feature.dtype != "BYTES":
            try:
                values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
            except UnicodeDecodeError:
                raise ProtocolError(f"input {feature.name}: a value is not UTF-8 text") from None
        return coerce_values(values, feature, position=position)
    if array.dtype.kind == "b" and feature.dtype != "BOOL":
        raise ProtocolError(f"input {feature.name} expects {DATATYPES[feature.dtype]}, got BOOL")
    if feature.dtype in ("STRING", "BYTES", "TIMESTAMP_NTZ"):
        raise ProtocolError(f"input {feature.name} expects BYTES, got a {array.dtype} tensor")
    if feature.shape:
        return coerce_values(list(array), feature, position=position)
    return coerce_values(cast("Sequence[Any]", array), feature, position=position)


def encode_infer(out: Outputs, request: InferRequest, model_name: str, version: str) -> tuple[bytes, int | None]:
    """The infer answer, and the length of its JSON part when binary tensors follow it."""
    import numpy as np

    method = request.method
    names = request.outputs or [f.name for f in method.outputs]
    features = {f.name: f for f in method.outputs}
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        feature = features[name]
        array = _output_array(out[name], feature)
        tensor: dict[str, Any] = {"name": name, "datatype": DATATYPES[feature.dtype], "shape": list(array.shape)}
        if request.binary_all or name in request.binary:
            blob = _pack(array, feature)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif array.dtype == object:
            tensor["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                              for v in array.reshape(-1).tolist()]
        else:
            values = array.reshape(-1)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                tensor["data"] = [v if math.isfinite(v) else None for v in values.tolist()]
            else:
                tensor["data"] = values.tolist()
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": tensors}
    if request.id is not None:
        answer["id"] = request.id
    head = json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _output_array(series: pd.Series, feature: FeatureSpec) -> np.ndarray:
    import numpy as np

    from duckserve.inference_server.datatypes import coerce_series

    column = coerce_series(series, feature, role="output")
    if feature.shape:
        try:
            return np.stack([np.asarray(v) for v in column.tolist()])
        except (ValueError, TypeError) as exc:
            raise ModelError(f"output {feature.name}: the rows are not one tensor ({exc})") from None
    if feature.dtype in ("STRING", "BYTES", "TIMESTAMP_NTZ"):
        values = column.astype(str).tolist() if feature.dtype == "TIMESTAMP_NTZ" else column.tolist()
        array = np.empty(len(values), dtype=object)
        array[:] = [v.encode("utf-8") if isinstance(v, str) else (b"" if v is None else v) for v in values]
        return array
    if column.isna().any() and feature.dtype not in ("FLOAT", "DOUBLE"):
        raise ModelError(f"output {feature.name} has missing values, which a {DATATYPES[feature.dtype]} tensor "
                         "cannot hold")
    return column.to_numpy(dtype=np.dtype(_NUMPY[DATATYPES[feature.dtype]]).newbyteorder("="))


def _pack(array: np.ndarray, feature: FeatureSpec) -> bytes:
    import numpy as np

    if array.dtype == object:
        parts = []
        for value in array.reshape(-1).tolist():
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(len(data).to_bytes(4, "little") + data)
        return b"".join(parts)
    dtype = np.dtype(_NUMPY[DATATYPES[feature.dtype]])
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
