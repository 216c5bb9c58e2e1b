"""The model package: a directory holding ``manifest.json`` and the model's artifacts.

Layout::

    <package>/manifest.json   name, version, handler, methods with signatures, python version, dependencies
    <package>/model/          the artifacts the handler wrote (its own file names)
    <package>/code/           the user's code_paths, put on sys.path before loading

The manifest is plain JSON so any environment can read it with the standard library.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MODEL_DIR = "model"
CODE_DIR = "code"
FORMAT_VERSION = 1

#: signature data types (Snowflake's DataType names) and their DuckDB SQL types
DUCKDB_TYPES: dict[str, str] = {
    "INT8": "TINYINT",
    "INT16": "SMALLINT",
    "INT32": "INTEGER",
    "INT64": "BIGINT",
    "UINT8": "UTINYINT",
    "UINT16": "USMALLINT",
    "UINT32": "UINTEGER",
    "UINT64": "UBIGINT",
    "FLOAT": "FLOAT",
    "DOUBLE": "DOUBLE",
    "BOOL": "BOOLEAN",
    "STRING": "VARCHAR",
    "BYTES": "BLOB",
    "TIMESTAMP_NTZ": "TIMESTAMP",
}


@dataclass
class FeatureSpec:
    """One input or output column of a method: a data type, optionally a shape (a vector, a matrix)."""

    name: str
    dtype: str
    shape: list[int] | None = None
    nullable: bool = True

    def __post_init__(self) -> None:
        self.dtype = self.dtype.upper()
        if self.dtype not in DUCKDB_TYPES:
            raise ValueError(f"feature {self.name}: unknown data type {self.dtype}; use one of {', '.join(DUCKDB_TYPES)}")

    @property
    def duckdb_type(self) -> str:
        """The DuckDB type: scalars map directly, each shape dimension adds a LIST level."""
        sql = DUCKDB_TYPES[self.dtype]
        for _ in self.shape or ():
            sql += "[]"
        return sql

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        shape = data.get("shape")
        return cls(data["name"], data["dtype"], list(shape) if shape is not None else None, data.get("nullable", True))


@dataclass
class MethodSpec:
    """A callable method of the model: its SQL-visible name, the model attribute it calls, its signature."""

    name: str
    inputs: list[FeatureSpec]
    outputs: list[FeatureSpec]
    target_method: str = ""

    def __post_init__(self) -> None:
        self.target_method = self.target_method or self.name

    @property
    def url_path(self) -> str:
        return "/" + self.name.lower().replace("_", "-")

    @property
    def sql_arguments(self) -> str:
        return ", ".join(f"{f.name} {f.duckdb_type}" for f in self.inputs)

    @property
    def sql_return_type(self) -> str:
        if len(self.outputs) == 1:
            return self.outputs[0].duckdb_type
        fields = ", ".join(f'"{f.name}" {f.duckdb_type}' for f in self.outputs)
        return f"STRUCT({fields})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodSpec:
        return cls(
            name=data["name"],
            inputs=[FeatureSpec.from_dict(f) for f in data["inputs"]],
            outputs=[FeatureSpec.from_dict(f) for f in data["outputs"]],
            target_method=data.get("target_method", ""),
        )


@dataclass
class Manifest:
    name: str
    version: str
    handler: str
    methods: list[MethodSpec]
    python_version: str
    conda_dependencies: list[str] = field(default_factory=list)
    pip_requirements: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    code_paths: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    comment: str | None = None
    format: int = FORMAT_VERSION

    def method(self, name: str) -> MethodSpec:
        wanted = name.lower().replace("-", "_")
        for method in self.methods:
            if method.name.lower() == wanted:
                return method
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, package: Path) -> None:
        (Path(package) / MANIFEST).write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["methods"] = [MethodSpec.from_dict(m) for m in data["methods"]]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, package: Path | str) -> Manifest:
        return cls.from_dict(json.loads((Path(package) / MANIFEST).read_text()))
