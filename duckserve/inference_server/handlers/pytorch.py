"""PyTorch: ``torch.nn.Module`` (its ``forward``) and TorchScript modules.

Inputs: each signature input becomes one tensor argument of ``forward``, rows along the first
dimension. A sample given as a tensor (or a list of tensors) makes one input per tensor, its shape
per row (``FLOAT[4]`` in SQL for a ``(n, 4)`` tensor). A DataFrame sample of scalar columns for a
``forward`` that takes one tensor is stacked into one ``(n, columns)`` tensor, so SQL can call
``svc!forward(f1, f2, f3)``. Floating inputs are converted to the dtype of the model's parameters.

Outputs: a ``(n,)`` or ``(n, 1)`` tensor is one scalar per row, ``(n, k)`` a ``FLOAT[k]`` vector per
row; a tuple or list of tensors gives several outputs, a dict named outputs.

An ``nn.Module`` is pickled with cloudpickle (classes from ``__main__`` and local files by value);
a TorchScript module is saved with ``torch.jit.save`` and needs no Python class to load. The model
moves to the GPU when the service serves on one.
"""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from duckserve.inference_server.handlers.base import (
    SIGNATURE_SAMPLE_ROWS,
    ModelHandler,
    conform_inputs,
    dump_pickle,
    features_from_frame,
    load_pickle,
    pinned,
    result_frame,
    serving_device,
)
from duckserve.inference_server.manifest import FeatureSpec, MethodSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger("duckserve.inference_server")

PICKLE_FILE = "module.pkl"
SCRIPT_FILE = "module.pt"


def _is_script(model: Any) -> bool:
    import torch

    return isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction))


def _positional_arity(model: Any, method_name: str) -> int | None:
    """How many positional arguments the method takes (None when it cannot be told, as for TorchScript)."""
    if _is_script(model):
        return None
    try:
        parameters = inspect.signature(getattr(model, method_name)).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _float_dtype(model: Any) -> str:
    for parameter in list(model.parameters()) + list(model.buffers()):
        if parameter.is_floating_point():
            return str(parameter.dtype).replace("torch.", "")
    return "float32"


def _as_numpy(value: Any) -> np.ndarray:
    import numpy as np

    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()  # type: ignore[no-any-return]
    return np.asarray(value)


def _rows(array: np.ndarray) -> Any:
    """One value per row: scalars for ``(n,)`` and ``(n, 1)``, per-row arrays for wider results."""
    import numpy as np

    if array.ndim == 0:
        raise ValueError("the model returned a single value; expected one value per input row")
    if array.ndim == 1:
        return array
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    rows = np.empty(len(array), dtype=object)
    for i, row in enumerate(array):
        rows[i] = row
    return rows


def sample_frame(model: Any, method_name: str, sample: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The sample as a DataFrame (one column per tensor argument) and the options that turn such a
    frame back into the tensors: ``stack_columns`` or per-input ``shapes``, and the float dtype."""
    import numpy as np
    import pandas as pd

    from duckserve.inference_server.handlers.base import sample_to_frame

    options: dict[str, Any] = {"float_dtype": _float_dtype(model)}
    tensors: list[Any] | None = None
    if hasattr(sample, "detach") or isinstance(sample, np.ndarray):
        tensors = [sample]
    elif isinstance(sample, (list, tuple)) and sample and all(
        hasattr(t, "detach") or isinstance(t, np.ndarray) for t in sample
    ):
        tensors = list(sample)
    if tensors is not None:
        columns: dict[str, Any] = {}
        shapes: list[list[int]] = []
        for i, tensor in enumerate(tensors):
            array = _as_numpy(tensor)
            if array.ndim == 0:
                raise ValueError("a sample tensor needs a first (batch) dimension")
            shapes.append(list(array.shape[1:]))
            if array.ndim == 1:
                columns[f"input_feature_{i}"] = array
            else:  # one array per row, (n, 1) included: the model takes that shape back
                rows = np.empty(len(array), dtype=object)
                for j, row in enumerate(array):
                    rows[j] = row
                columns[f"input_feature_{i}"] = rows
        options["shapes"] = shapes
        return pd.DataFrame(columns), options
    frame, _ = sample_to_frame(sample)
    arity = _positional_arity(model, method_name)
    scalar = all(frame[c].dtype.kind in "biuf" for c in frame.columns)
    if arity == 1 and frame.shape[1] > 1 and scalar:
        options["stack_columns"] = True
    else:
        options["shapes"] = [[] for _ in frame.columns]
    return frame, options


def to_tensors(frame: pd.DataFrame, options: dict[str, Any], device: str = "cpu") -> list[Any]:
    import numpy as np
    import torch

    float_dtype = getattr(torch, options.get("float_dtype", "float32"))

    def tensor(array: np.ndarray) -> Any:
        value = torch.from_numpy(np.ascontiguousarray(array))
        if value.is_floating_point() and value.dtype != float_dtype:
            value = value.to(float_dtype)
        return value.to(device) if device != "cpu" else value

    if options.get("stack_columns"):
        return [tensor(frame.to_numpy(dtype=np.float64 if float_dtype == torch.float64 else np.float32))]
    shapes = options.get("shapes") or [[] for _ in frame.columns]
    tensors = []
    for column, shape in zip(frame.columns, shapes):
        values = frame[column]
        if shape:
            array = np.stack(values.to_numpy()) if len(values) else np.zeros((0, *shape))
        else:
            array = values.to_numpy()
        tensors.append(tensor(array))
    return tensors


def from_outputs(result: Any) -> Any:
    """The method's raw result as one value per row (see the module docstring)."""
    import pandas as pd

    if isinstance(result, dict):
        return pd.DataFrame({str(k): _rows(_as_numpy(v)) for k, v in result.items()})
    if isinstance(result, (tuple, list)):
        return pd.DataFrame({f"output_feature_{i}": _rows(_as_numpy(v)) for i, v in enumerate(result)})
    return _rows(_as_numpy(result))


class PyTorchHandler(ModelHandler):
    name: ClassVar[str] = "pytorch"
    description: ClassVar[str] = "PyTorch models (torch.nn.Module and TorchScript)"

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        if "torch" not in sys.modules or isinstance(model, type):
            return False
        import torch

        return isinstance(model, torch.nn.Module) or _is_script(model)

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        return ["forward"]

    @classmethod
    def infer_signature(cls, model: Any, method_name: str, sample_input: Any) -> MethodSpec:
        cls.check_method(model, method_name)
        frame, options = sample_frame(model, method_name, sample_input)
        spec = MethodSpec(method_name, features_from_frame(frame), [FeatureSpec("output_feature_0", "DOUBLE")],
                          method_name)
        head = conform_inputs(frame.head(SIGNATURE_SAMPLE_ROWS), spec)
        spec.outputs = features_from_frame(result_frame(cls.invoke(model, method_name, head, options)))
        return spec

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        import torch

        device = "cpu"
        for parameter in model.parameters():
            device = str(parameter.device)
            break
        with torch.inference_mode():
            result = getattr(model, method_name)(*to_tensors(frame, options, device))
        return from_outputs(result)

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        # the installed build exactly, local label included (torch==2.13.0+cpu): a bare "torch" would
        # resolve to the index's CUDA build
        return [p for p in (pinned("torch"),) if p], []

    @classmethod
    def runtime_modules(cls, manifest: Any) -> list[str]:
        return ["torch"]

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        if not cls.can_handle(model):
            raise TypeError(f"{type(model).__module__}.{type(model).__qualname__} is not a PyTorch module")
        import torch

        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {}
        if sample_input is not None:
            options = sample_frame(model, "forward", sample_input)[1]
        if _is_script(model):
            torch.jit.save(model, str(model_dir / SCRIPT_FILE))
            options["kind"] = "torchscript"
        else:
            was_training = model.training
            device = next((p.device for p in model.parameters()), None)
            model.eval()
            try:  # saved from the CPU, so it loads on hosts without the device it was trained on
                dump_pickle(model.cpu(), model_dir / PICKLE_FILE, [type(m) for m in model.modules()])
            finally:
                model.train(was_training)
                if device is not None:
                    model.to(device)
            options["kind"] = "module"
        return {"options": options, "artifacts": {}}

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        import torch

        device = serving_device()
        if device == "cuda" and not torch.cuda.is_available():
            logger.warning("the service asked for GPUs but torch sees no CUDA device: running on the CPU")
            device = "cpu"
        if options.get("kind") == "torchscript":
            model = torch.jit.load(str(Path(model_dir) / SCRIPT_FILE), map_location=device)
        else:
            model = load_pickle(Path(model_dir) / PICKLE_FILE)
            model = model.to(device)
        model.eval()
        return model
