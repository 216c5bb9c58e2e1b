"""Signatures, mirroring ``snowflake.ml.model.model_signature``::

    from duckserve.model_signature import DataType, FeatureSpec, ModelSignature

    sig = ModelSignature(inputs=[FeatureSpec("TEXT", DataType.STRING)],
                         outputs=[FeatureSpec("EMBEDDING", DataType.FLOAT, shape=(384,))])
    reg.log_model(model, model_name="m", signatures={"encode": sig})

Data types map to DuckDB types (``DataType.DOUBLE`` is ``DOUBLE``, a shape adds a LIST level per
dimension: ``FLOAT[]``); `from_duckdb_type` goes the other way. ``signatures`` also accepts an
MLflow ``ModelSignature`` and plain dicts ``{"inputs": [{"name": ..., "type": ..., "shape": ...}], ...}``.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

from duckserve.inference_server.manifest import DUCKDB_TYPES
from duckserve.inference_server.manifest import FeatureSpec as _Feature
from duckserve.inference_server.manifest import MethodSpec as _Method


class DataType(enum.Enum):
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    BOOL = "BOOL"
    STRING = "STRING"
    BYTES = "BYTES"
    TIMESTAMP_NTZ = "TIMESTAMP_NTZ"

    @property
    def duckdb_type(self) -> str:
        return DUCKDB_TYPES[self.value]


#: DuckDB type names (and common synonyms) -> signature data types
_FROM_DUCKDB: dict[str, str] = {
    **{sql: name for name, sql in DUCKDB_TYPES.items()},
    "INT1": "INT8", "INT2": "INT16", "INT4": "INT32", "INT": "INT32", "INT8": "INT64", "LONG": "INT64",
    "SHORT": "INT16", "REAL": "FLOAT", "FLOAT4": "FLOAT", "FLOAT8": "DOUBLE", "BOOL": "BOOL",
    "STRING": "STRING", "TEXT": "STRING", "CHAR": "STRING", "BPCHAR": "STRING", "BYTEA": "BYTES",
    "BINARY": "BYTES", "VARBINARY": "BYTES", "DATETIME": "TIMESTAMP_NTZ", "TIMESTAMP_NTZ": "TIMESTAMP_NTZ",
    "TIMESTAMP_US": "TIMESTAMP_NTZ", "DATE": "TIMESTAMP_NTZ",
}
_DIMENSION = re.compile(r"\[(\d*)\]\s*$")


def from_duckdb_type(sql_type: str) -> tuple[str, list[int] | None]:
    """(data type, shape) of a DuckDB type: ``FLOAT[384]`` is ``("FLOAT", [384])``, ``DOUBLE[][]`` is
    ``("DOUBLE", [-1, -1])``. ValueError names the supported types otherwise."""
    text = sql_type.strip().upper()
    shape: list[int] = []
    while True:
        match = _DIMENSION.search(text)
        if not match:
            break
        shape.insert(0, int(match[1]) if match[1] else -1)
        text = text[: match.start()].rstrip()
    base = re.sub(r"\(.*\)$", "", text).strip()
    if base.startswith("DECIMAL") or base.startswith("NUMERIC"):
        base = "DOUBLE"
    if base not in _FROM_DUCKDB:
        raise ValueError(
            f"DuckDB type {sql_type!r} has no signature data type; use one of {', '.join(DUCKDB_TYPES.values())} "
            "or a LIST/ARRAY of them"
        )
    return _FROM_DUCKDB[base], shape or None


@dataclass
class FeatureSpec:
    """One input or output: a name, a data type (`DataType` or its name, or a DuckDB type such as
    ``FLOAT[384]``) and an optional shape."""

    name: str
    dtype: DataType | str
    shape: tuple[int, ...] | None = None
    nullable: bool = True

    def to_feature(self) -> _Feature:
        dtype = self.dtype.value if isinstance(self.dtype, DataType) else str(self.dtype).upper()
        shape = list(self.shape) if self.shape is not None else None
        if dtype not in DUCKDB_TYPES:
            dtype, sql_shape = from_duckdb_type(dtype)
            shape = shape or sql_shape
        return _Feature(self.name, dtype, shape, self.nullable)


@dataclass
class ModelSignature:
    inputs: list[FeatureSpec] = field(default_factory=list)
    outputs: list[FeatureSpec] = field(default_factory=list)


def _feature_from(value: Any, default_name: str) -> _Feature:
    if isinstance(value, _Feature):
        return value
    if isinstance(value, FeatureSpec):
        return value.to_feature()
    if isinstance(value, dict):
        name = str(value.get("name") or default_name)
        dtype = value.get("dtype", value.get("type"))
        if dtype is None:
            raise ValueError(f"feature {name}: give its type (dtype=...)")
        shape = value.get("shape")
        return FeatureSpec(name, str(dtype), tuple(shape) if shape else None,
                           bool(value.get("nullable", True))).to_feature()
    raise TypeError(f"feature {default_name}: expected a FeatureSpec or a dict, got {type(value).__name__}")


def to_method_spec(method: str, signature: Any) -> _Method:
    """A method's signature in any accepted form (see the module docstring) as a manifest MethodSpec."""
    if isinstance(signature, _Method):
        signature.name = method
        return signature
    if isinstance(signature, ModelSignature):
        inputs: Any = signature.inputs
        outputs: Any = signature.outputs
    elif isinstance(signature, dict):
        inputs, outputs = signature.get("inputs"), signature.get("outputs")
    elif hasattr(signature, "to_dict") and type(signature).__module__.startswith("mlflow"):
        from duckserve.inference_server.handlers.mlflow import signature_features

        mlmodel = {"signature": signature.to_dict()}
        found_inputs = signature_features(mlmodel, "inputs")
        found_outputs = signature_features(mlmodel, "outputs")
        if not found_inputs or not found_outputs:
            raise ValueError(f"the MLflow signature of {method} needs both inputs and outputs")
        return _Method(method, found_inputs, found_outputs, method)
    else:
        raise TypeError(
            f"signature of {method}: expected a duckserve.model_signature.ModelSignature, an MLflow "
            f"ModelSignature or a dict with inputs and outputs, got {type(signature).__name__}"
        )
    if isinstance(inputs, str):
        inputs = json.loads(inputs)
    if isinstance(outputs, str):
        outputs = json.loads(outputs)
    if not outputs:
        raise ValueError(f"signature of {method}: it has no outputs")
    return _Method(method, [_feature_from(f, f"input_feature_{i}") for i, f in enumerate(inputs or [])],
                   [_feature_from(f, f"output_feature_{i}") for i, f in enumerate(outputs)], method)
