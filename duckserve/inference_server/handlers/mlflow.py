"""MLflow models: a directory written by ``mlflow.<flavor>.save_model`` or ``log_model`` (it holds an
``MLmodel`` file), served through ``mlflow.pyfunc.load_model(...).predict``.

Logged with ``reg.log_model("path/to/model", model_name=...)`` or
``CREATE MODEL m WITH VERSION v FROM 'path/to/model'``. The directory brings its own:

- signature: ``MLmodel``'s ``signature`` (column specs or a tensor spec) becomes the method's
  signature; without one, the saved ``input_example.json`` (or ``sample_input_data``) is run through
  the model to infer it;
- requirements: ``requirements.txt`` (what ``pip_requirements`` / ``extra_pip_requirements`` /
  ``conda_env`` made of it when the model was saved) and the conda packages of ``conda.yaml``
  (prefixed with its channel). ``mlflow`` is served by ``mlflow-skinny`` of the same version: the
  tracking server and UI are not needed to serve a model;
- code: ``code_paths`` saved with the model live in its ``code/`` directory, which MLflow puts on
  ``sys.path`` when it loads the model;
- Python: the model's ``python_env.yaml`` decides the environment's Python version.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from duckserve.inference_server.errors import ModelRefused
from duckserve.inference_server.handlers.base import (
    SIGNATURE_SAMPLE_ROWS,
    ModelHandler,
    conform_inputs,
    features_from_frame,
    ignored_params,
    result_frame,
)
from duckserve.inference_server.manifest import FeatureSpec, MethodSpec

if TYPE_CHECKING:
    import pandas as pd

MLMODEL = "MLmodel"
MODEL_SUBDIR = "mlflow_model"
#: MLflow column types -> signature data types
COLUMN_TYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FLOAT",
    "double": "DOUBLE",
    "string": "STRING",
    "binary": "BYTES",
    "datetime": "TIMESTAMP_NTZ",
}
TENSOR_TYPES = {
    "bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "uint8": "UINT8",
    "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "float16": "FLOAT", "float32": "FLOAT",
    "float64": "DOUBLE", "str": "STRING", "object": "STRING", "bytes": "BYTES",
}
#: flavors whose models never use a GPU
CPU_ONLY_FLAVORS = ("sklearn",)
#: serving needs mlflow.pyfunc only: the skinny distribution of the same version has it
SERVING_DISTRIBUTIONS = {"mlflow": "mlflow-skinny"}


def is_mlflow_model(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and (Path(path) / MLMODEL).is_file()


def read_mlmodel(path: Path | str) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise ImportError("reading an MLflow model's MLmodel file needs PyYAML: pip install pyyaml") from None
    data = yaml.safe_load((Path(path) / MLMODEL).read_text())
    if not isinstance(data, dict) or "flavors" not in data:
        raise ValueError(f"{Path(path) / MLMODEL} is not an MLflow MLmodel file (it has no flavors)")
    return data


def _feature(spec: dict[str, Any], default_name: str) -> FeatureSpec:
    name = str(spec.get("name") or default_name)
    kind = spec.get("type")
    if kind == "tensor":
        tensor = spec.get("tensor-spec") or {}
        dtype = TENSOR_TYPES.get(str(tensor.get("dtype")))
        if dtype is None:
            raise ValueError(f"MLflow tensor {name}: dtype {tensor.get('dtype')} has no signature type")
        shape = list(tensor.get("shape") or [-1])[1:]
        if shape == [1]:
            shape = []
        return FeatureSpec(name, dtype, shape or None, nullable=not spec.get("required", False))
    if kind == "array":
        inner = _feature({"type": (spec.get("items") or {}).get("type"), "name": name}, name)
        return FeatureSpec(name, inner.dtype, [-1] + list(inner.shape or []))
    dtype = COLUMN_TYPES.get(str(kind))
    if dtype is None:
        raise ValueError(
            f"MLflow column {name}: type {kind!r} has no signature type here (supported: "
            f"{', '.join(COLUMN_TYPES)}, tensors and arrays); log the model with a simpler signature"
        )
    return FeatureSpec(name, dtype, nullable=not spec.get("required", True))


def signature_features(mlmodel: dict[str, Any], part: str) -> list[FeatureSpec] | None:
    """The MLmodel signature's inputs or outputs as features (None when it has none)."""
    raw = (mlmodel.get("signature") or {}).get(part)
    if not raw:
        return None
    specs = json.loads(raw) if isinstance(raw, str) else raw
    prefix = "input_feature" if part == "inputs" else "output_feature"
    return [_feature(spec, f"{prefix}_{i}") for i, spec in enumerate(specs)]


def input_example(path: Path | str, mlmodel: dict[str, Any]) -> pd.DataFrame | None:
    """The saved input example as a DataFrame (split or records orient), or None."""
    import pandas as pd

    info = mlmodel.get("saved_input_example_info") or {}
    example = Path(path) / str(info.get("artifact_path", "input_example.json"))
    if not example.is_file():
        return None
    data = json.loads(example.read_text())
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return pd.DataFrame(data["data"], columns=data["columns"])
    if isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return pd.DataFrame.from_records(data)
    if isinstance(data, dict):
        return pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in data.items()})
    return None


def serving_requirement(line: str) -> str:
    """``mlflow==3.1`` -> ``mlflow-skinny==3.1``; other requirements unchanged."""
    text = line.strip()
    for name, replacement in SERVING_DISTRIBUTIONS.items():
        rest = text[len(name):]
        if text.lower().startswith(name) and (not rest or rest[0] in "=<>!~[; "):
            return replacement + rest
    return text


def model_requirements(path: Path | str) -> tuple[list[str], list[str]]:
    """(conda packages with their channel, pip requirements) recorded with the MLflow model."""
    path = Path(path)
    pip: list[str] = []
    conda: list[str] = []
    requirements = path / "requirements.txt"
    if requirements.is_file():
        for line in requirements.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                pip.append(serving_requirement(line))
    environment = path / "conda.yaml"
    if environment.is_file():
        import yaml

        data = yaml.safe_load(environment.read_text()) or {}
        channels = [c for c in data.get("channels") or [] if c not in ("nodefaults",)]
        for entry in data.get("dependencies") or []:
            if isinstance(entry, dict):
                if not pip:
                    pip = [serving_requirement(str(p)) for p in entry.get("pip") or [] if not str(p).startswith("-")]
                continue
            name = str(entry).split("=")[0].split("<")[0].split(">")[0].strip().lower()
            if name in ("python", "pip"):
                continue
            entry = str(entry)
            conda.append(entry if "::" in entry or not channels else f"{channels[0]}::{entry}")
    return conda, pip


def python_version_of(path: Path | str, mlmodel: dict[str, Any]) -> str | None:
    version = (mlmodel.get("flavors", {}).get("python_function") or {}).get("python_version")
    if not version:
        env = Path(path) / "python_env.yaml"
        if env.is_file():
            import yaml

            version = (yaml.safe_load(env.read_text()) or {}).get("python")
    if not version:
        return None
    parts = str(version).split(".")
    return ".".join(parts[:2])


class MLflowHandler(ModelHandler):
    name: ClassVar[str] = "mlflow"
    description: ClassVar[str] = "MLflow model directories (written by mlflow.<flavor>.save_model or log_model)"

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        return is_mlflow_model(model)

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        return ["predict"]

    @classmethod
    def check_method(cls, model: Any, method_name: str) -> None:
        if method_name != "predict":
            raise ValueError(f"an MLflow model serves predict only, not {method_name!r}")

    @classmethod
    def runs_on_cpu_only(cls, manifest: Any) -> bool:
        return bool(manifest.options.get("cpu_only"))

    @classmethod
    def runtime_modules(cls, manifest: Any) -> list[str]:
        return ["mlflow.pyfunc"]

    @classmethod
    def infer_signature(cls, model: Any, method_name: str, sample_input: Any) -> MethodSpec:
        cls.check_method(model, method_name)
        mlmodel = read_mlmodel(model)
        inputs = signature_features(mlmodel, "inputs")
        outputs = signature_features(mlmodel, "outputs")
        if inputs is not None and outputs is not None:
            return MethodSpec(method_name, inputs, outputs, method_name)
        from duckserve.inference_server.handlers.base import sample_to_frame

        sample = sample_input if sample_input is not None else input_example(model, mlmodel)
        if sample is None:
            raise ValueError(
                f"the MLflow model at {model} has no signature and no input example: pass sample_input_data=..., "
                "or save it with signature=infer_signature(...) or input_example=..."
            )
        frame, _ = sample_to_frame(sample)
        spec = MethodSpec(method_name, inputs or features_from_frame(frame),
                          [FeatureSpec("output_feature_0", "DOUBLE")], method_name)
        options = cls._options(mlmodel, spec.inputs)
        loaded = load_pyfunc(Path(model))
        head = conform_inputs(frame.head(SIGNATURE_SAMPLE_ROWS), spec)
        spec.outputs = features_from_frame(result_frame(cls.invoke(loaded, method_name, head, options)))
        return spec

    @classmethod
    def _options(cls, mlmodel: dict[str, Any], inputs: list[FeatureSpec] | None) -> dict[str, Any]:
        flavors = sorted(f for f in mlmodel.get("flavors", {}) if f != "python_function")
        raw = (mlmodel.get("signature") or {}).get("inputs")
        specs = json.loads(raw) if isinstance(raw, str) else (raw or [])
        tensor = bool(specs) and all(s.get("type") == "tensor" for s in specs)
        return {
            "flavors": flavors,
            "input_kind": "tensor" if tensor else "columns",
            "cpu_only": bool(flavors) and all(f in CPU_ONLY_FLAVORS for f in flavors),
            "mlflow_version": mlmodel.get("mlflow_version"),
        }

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        return cls.invoke_params(model, method_name, frame, options, None)

    @classmethod
    def invoke_params(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any],
                      params: Any) -> Any:
        import numpy as np

        result = cls.invoke_native(model, method_name, frame, options, params)
        if isinstance(result, np.ndarray) and result.ndim == 2 and result.shape[1] > 1:
            rows = np.empty(len(result), dtype=object)  # a tensor output: one vector per row
            for i, row in enumerate(result):
                rows[i] = row
            return rows
        return result

    @classmethod
    def invoke_native(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any],
                      params: Any) -> Any:
        """``pyfunc.predict(data, params=params)``, as MLflow's scoring server calls it: MLflow checks
        ``params`` against the signature's parameters (defaults filled in, unknown ones ignored with
        a warning, a wrong type refused); its refusals become `ModelRefused` with MLflow's body."""
        import numpy as np
        from mlflow.exceptions import MlflowException

        data: Any = frame
        if options.get("input_kind") == "tensor":
            arrays = []
            for column in frame.columns:
                values = frame[column].to_numpy()
                arrays.append(np.stack(values) if values.dtype == object else values.reshape(-1, 1))
            data = arrays[0] if len(arrays) == 1 else {c: a for c, a in zip(frame.columns, arrays)}
        try:
            if "params" in inspect.signature(model.predict).parameters:  # MLflow 2.6 and later
                result = model.predict(data, params=params)
            else:
                if params:
                    ignored_params(params, "this MLflow version takes no params")
                result = model.predict(data)
        except MlflowException as exc:  # the scoring server's answer to it, message and all
            fields = json.loads(exc.serialize_as_json())
            fields["message"] = f"Failed to predict data '{data}'. \nError: {exc.message}"
            raise ModelRefused(exc.get_http_status_code(), fields) from exc
        return result

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        conda, pip = model_requirements(model)
        if not any(r.lower().startswith(("mlflow-skinny", "mlflow")) for r in pip):
            mlmodel = read_mlmodel(model)
            version = mlmodel.get("mlflow_version")
            pip.append(f"mlflow-skinny=={version}" if version else "mlflow-skinny")
        return conda, pip

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        if not cls.can_handle(model):
            raise TypeError(f"{model!r} is not an MLflow model directory (it has no {MLMODEL} file)")
        source = Path(model)
        mlmodel = read_mlmodel(source)
        target = Path(model_dir) / MODEL_SUBDIR
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        options = cls._options(mlmodel, signature_features(mlmodel, "inputs"))
        python = python_version_of(source, mlmodel)
        info: dict[str, Any] = {"options": options, "artifacts": {}}
        if python:
            info["python_version"] = python
        return info

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        return load_pyfunc(Path(model_dir) / MODEL_SUBDIR)


def load_pyfunc(path: Path) -> Any:
    """``mlflow.pyfunc.load_model`` of a local directory (MLflow puts the model's code/ on sys.path)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(path))
