"""What every model handler provides, and the parts they share.

A handler knows one framework: whether an object belongs to it, which methods to expose, how to call
a method on a DataFrame whose columns follow the signature, which packages it needs, and how to
save and load the object. `ModelHandler` implements signature inference and loading on top of the
framework-specific `invoke`, `save` and `load_object`, so a new framework is one small subclass.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import pickle
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from duckserve.inference_server.errors import MissingInput, ModelError, UnknownMethod
from duckserve.inference_server.manifest import MODEL_DIR, FeatureSpec, Manifest, MethodSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from duckserve.inference_server.decoding import Inputs

    Invoke = Callable[[Any, str, pd.DataFrame, dict[str, Any]], Any]
    InvokeBlock = Callable[[Any, str, np.ndarray, dict[str, Any]], Any]
    InvokeParams = Callable[[Any, str, pd.DataFrame, dict[str, Any], Any], Any]
    InvokeNative = Callable[[Any, str, pd.DataFrame, dict[str, Any], Any], Any]
    #: a method's answer: a frame of its outputs, or (the hot path) a mapping of output name to values
    from typing import Union

    Outputs = Union[pd.DataFrame, dict[str, np.ndarray]]

#: rows of the sample input the method is called on to infer its outputs
SIGNATURE_SAMPLE_ROWS = 10
PICKLE_FILE = "model.pkl"

logger = logging.getLogger("duckserve.inference_server")


class NativeAnswer:
    """A model's answer as its framework returned it, not fitted to the signature: for a protocol
    that the framework's own server speaks (MLflow's scoring protocol for an MLflow model), whose
    answers follow what the model returns."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class LoadedModel:
    """A model ready to serve: `call` takes and returns DataFrames shaped by the method signatures."""

    def __init__(self, manifest: Manifest, model: Any, invoke: Invoke, invoke_block: InvokeBlock | None = None,
                 invoke_params: InvokeParams | None = None, invoke_native: InvokeNative | None = None) -> None:
        self.manifest = manifest
        self.model = model
        self._invoke = invoke
        self._invoke_block = invoke_block
        self._invoke_params = invoke_params
        self._invoke_native = invoke_native

    def method(self, name: str) -> MethodSpec:
        """The method called ``name`` (``_`` or ``-``, any case); `UnknownMethod` lists the others."""
        try:
            return self.manifest.method(name)
        except KeyError:
            known = ", ".join(m.name for m in self.manifest.methods)
            raise UnknownMethod(
                f"model {self.manifest.name} has no method {name!r}; its methods: {known}"
            ) from None

    @property
    def takes_params(self) -> bool:
        """Whether the handler passes inference parameters (MLflow's ``params``) to the model."""
        return self._invoke_params is not None

    @property
    def answers_natively(self) -> bool:
        """Whether `call_native` gives the model's own answer (its handler has `invoke_native`)."""
        return self._invoke_native is not None

    def call_native(self, method_name: str, inputs: Inputs, params: Any = None) -> NativeAnswer:
        """Call a method on conformed inputs and keep its answer as the model returned it."""
        assert self._invoke_native is not None, "check answers_natively first"
        spec = self.method(method_name)
        frame = conform_inputs(inputs.frame, spec)
        return NativeAnswer(self._invoke_native(self.model, spec.target_method, frame, self.manifest.options, params))

    def call(self, method_name: str, df: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """Call a method: ``df`` holds the inputs (by name; extra columns are ignored); the answer holds
        exactly the outputs, one row per input row, in the same order. ``params`` (a request's
        inference parameters, None without them) go to handlers that take them (`takes_params`),
        which check them against the method's; other handlers ignore them with a warning, as MLflow
        does for a model whose signature has no parameters.

        Raises `ProtocolError` when the input does not fit the signature and `ModelError` when the
        model's answer does not; exceptions raised by the model itself propagate unchanged.
        """
        spec = self.method(method_name)
        frame = conform_inputs(df, spec)
        if len(frame) == 0:
            return empty_outputs(spec)
        if params is not None and self._invoke_params is not None:
            result = self._invoke_params(self.model, spec.target_method, frame, self.manifest.options, params)
        else:
            if params:
                ignored_params(params, f"model {self.manifest.name} takes no parameters")
            result = self._invoke(self.model, spec.target_method, frame, self.manifest.options)
        return conform_outputs(result, spec, len(frame))

    def call_inputs(self, method_name: str, inputs: Inputs, params: Any = None) -> Outputs:
        """`call` on decoded inputs. A numeric block goes straight to the handler's array path when it
        has one (no DataFrame either way for a single scalar output)."""
        import numpy as np

        spec = self.method(method_name)
        if params is not None and self._invoke_params is not None:
            return self.call(method_name, inputs.frame, params)
        if params:
            ignored_params(params, f"model {self.manifest.name} takes no parameters")
        types = {f.dtype for f in spec.inputs}
        if inputs.block is not None and self._invoke_block is not None and len(inputs) and types <= {"DOUBLE"} | (
                {"FLOAT"} if types == {"FLOAT"} else set()):
            # column-major, as a DataFrame holds it: the same layout gives the same last bits as a frame
            block = np.asfortranarray(inputs.block, dtype=np.float32 if types == {"FLOAT"} else np.float64)
            result = self._invoke_block(self.model, spec.target_method, block, self.manifest.options)
            if result is not NotImplemented:
                rows = len(inputs.block)
                if (isinstance(result, np.ndarray) and result.ndim == 1 and len(result) == rows
                        and len(spec.outputs) == 1 and not spec.outputs[0].shape):
                    return {spec.outputs[0].name: result}
                return conform_outputs(result, spec, rows)
        return self.call(method_name, inputs.frame)


def ignored_params(params: Any, why: str) -> None:
    """Log that a request's parameters are ignored (MLflow warns and goes on, too)."""
    shown = list(params)[:20] if isinstance(params, dict) else f"(not an object: {type(params).__name__})"
    logger.warning("%s: ignoring the request's params %s", why, shown)


class ModelHandler:
    """One framework. Subclasses set `name` and `description` and implement the ``NotImplemented``
    methods; the rest is shared."""

    name: ClassVar[str] = ""
    #: what the handler serves, for the error listing the supported kinds
    description: ClassVar[str] = ""

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        """True if ``model`` belongs to this framework. Must not import the framework just to answer."""
        raise NotImplementedError

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        """The methods exposed when the user names none."""
        raise NotImplementedError

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        """Call ``method_name`` on a frame whose columns are the signature's inputs; return the raw
        result (DataFrame, Series, array, list). ``options`` are those `save` returned."""
        raise NotImplementedError

    @classmethod
    def invoke_block(cls, model: Any, method_name: str, block: np.ndarray, options: dict[str, Any]) -> Any:
        """Call ``method_name`` on a float64 block (rows x inputs in signature order) when the framework
        takes plain arrays, skipping the DataFrame; NotImplemented (the default) when it does not."""
        return NotImplemented

    @classmethod
    def invoke_params(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any],
                      params: Any) -> Any:
        """`invoke` with a request's inference parameters (any JSON value: the handler checks it), for
        handlers whose models take parameters; the default says they take none."""
        raise NotImplementedError

    @classmethod
    def invoke_native(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any],
                      params: Any) -> Any:
        """`invoke_params` without fitting the answer for `invoke`, for handlers whose framework has
        a serving protocol of its own that answers whatever the model returns (see `NativeAnswer`)."""
        raise NotImplementedError

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        """(conda-style, pip) requirements the model needs, the framework pinned to the installed version."""
        raise NotImplementedError

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        """Write the model's artifacts under ``model_dir``; return ``{"options": {...}, "artifacts": {...}}``
        for the manifest (artifact paths relative to the package)."""
        raise NotImplementedError

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        """Read back the object `save` wrote."""
        raise NotImplementedError

    #: True for frameworks that never use a GPU: asking a service for GPUs fails its image build
    cpu_only: ClassVar[bool] = False

    @classmethod
    def runs_on_cpu_only(cls, manifest: Manifest) -> bool:
        """Whether a package of this handler can only run on the CPU (some handlers decide per model)."""
        return cls.cpu_only or bool(manifest.options.get("cpu_only"))

    @classmethod
    def runtime_modules(cls, manifest: Manifest) -> list[str]:
        """Modules the model needs at serving time, imported once when its environment is built."""
        return []

    @classmethod
    def load(cls, package_dir: Path, manifest: Manifest) -> LoadedModel:
        model = cls.load_object(Path(package_dir) / MODEL_DIR, manifest.options)
        block = cls.invoke_block if cls._overrides("invoke_block") else None
        with_params = cls.invoke_params if cls._overrides("invoke_params") else None
        native = cls.invoke_native if cls._overrides("invoke_native") else None
        return LoadedModel(manifest, model, cls.invoke, block, with_params, native)

    @classmethod
    def _overrides(cls, name: str) -> bool:
        return next(k for k in cls.__mro__ if name in vars(k)) is not ModelHandler

    @classmethod
    def check_method(cls, model: Any, method_name: str) -> None:
        if not callable(getattr(model, method_name, None)):
            available = ", ".join(cls.default_methods(model)) or "none"
            raise ValueError(f"{type(model).__name__} has no method {method_name!r}; available: {available}")

    @classmethod
    def infer_signature(cls, model: Any, method_name: str, sample_input: Any) -> MethodSpec:
        """Inputs from the sample's columns and types; outputs from calling the method on its first rows."""
        cls.check_method(model, method_name)
        frame, _ = sample_to_frame(sample_input)
        inputs = features_from_frame(frame)
        spec = MethodSpec(method_name, inputs, [FeatureSpec("output_feature_0", "DOUBLE")], method_name)
        head = conform_inputs(frame.head(SIGNATURE_SAMPLE_ROWS), spec)
        result = cls.invoke(model, method_name, head, sample_options(sample_input))
        spec.outputs = features_from_frame(result_frame(result))
        return spec


# ---------------------------------------------------------------------------------------------
# samples, inputs and outputs


def sample_to_frame(sample: Any) -> tuple[pd.DataFrame, int]:
    """The sample input as a DataFrame, and whether it was 1-D (a list of strings, a Series) or 2-D.

    Columns: a DataFrame's own; ``input_feature_0..n-1`` for arrays and lists of lists.
    """
    import numpy as np
    import pandas as pd

    if sample is None:
        raise ValueError("no sample input: pass sample_input_data (or explicit signatures)")
    if isinstance(sample, pd.DataFrame):
        return sample.reset_index(drop=True), 2
    if isinstance(sample, pd.Series):
        name = str(sample.name) if sample.name is not None else "input_feature_0"
        return sample.reset_index(drop=True).to_frame(name), 1
    if hasattr(sample, "to_pandas") and not isinstance(sample, np.ndarray):  # an Arrow table
        return sample.to_pandas(), 2
    if isinstance(sample, dict):
        return pd.DataFrame(sample), 2
    if isinstance(sample, (list, tuple)):
        if not sample:
            raise ValueError("the sample input is empty")
        if all(isinstance(v, (list, tuple, np.ndarray)) for v in sample):
            width = len(sample[0])
            return pd.DataFrame([list(v) for v in sample], columns=_input_names(width)), 2
        return pd.DataFrame({"input_feature_0": pd.Series(list(sample), dtype=object).infer_objects()}), 1
    if isinstance(sample, np.ndarray):
        if sample.ndim == 1:
            return pd.DataFrame({"input_feature_0": sample}), 1
        if sample.ndim == 2:
            return pd.DataFrame(sample, columns=_input_names(sample.shape[1])), 2
        raise ValueError(f"a sample array must be 1-D or 2-D, got shape {sample.shape}")
    raise TypeError(
        f"unsupported sample input {type(sample).__name__}: use a pandas DataFrame, a numpy array, "
        "a list of lists or a list of strings"
    )


def _input_names(width: int) -> list[str]:
    return [f"input_feature_{i}" for i in range(width)]


def sample_options(sample: Any) -> dict[str, Any]:
    """Options a handler needs at serving time that only the sample reveals (1-D inputs)."""
    if sample is None:
        return {}
    _, ndim = sample_to_frame(sample)
    return {"input_ndim": 1} if ndim == 1 else {}


def features_from_frame(frame: pd.DataFrame) -> list[FeatureSpec]:
    from duckserve.inference_server.datatypes import features_from_frame as infer

    return infer(frame)


def conform_inputs(df: pd.DataFrame, spec: MethodSpec) -> pd.DataFrame:
    """The signature's input columns, by name (exact, else case-insensitive), in order, converted to
    the signature's types."""
    import pandas as pd

    from duckserve.inference_server.datatypes import coerce_series, dtype_matches

    names = [f.name for f in spec.inputs]
    if list(df.columns) == names and all(dtype_matches(d, f) for d, f in zip(df.dtypes, spec.inputs)):
        return df  # the hot path: a decoded request already has the signature's columns and types
    folded = {str(c).lower(): c for c in df.columns}
    columns: dict[str, pd.Series] = {}
    for position, feature in enumerate(spec.inputs, start=1):
        column = feature.name if feature.name in df.columns else folded.get(feature.name.lower())
        if column is None:
            raise MissingInput(
                f"input has no column {feature.name}; method {spec.name} takes "
                f"{', '.join(f.name for f in spec.inputs)} (got {', '.join(map(str, df.columns))})"
            )
        columns[feature.name] = coerce_series(df[column], feature, position=position)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(df)))


def result_frame(result: Any) -> pd.DataFrame:
    """A method's raw result as a DataFrame: a DataFrame as is; 1-D results as ``output_feature_0``;
    2-D results one column per result column (``output_feature_i``); higher ranks one column of
    per-row arrays."""
    import numpy as np
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return result.reset_index(drop=True)
    if isinstance(result, pd.Series):
        return pd.DataFrame({"output_feature_0": result.reset_index(drop=True)})
    if hasattr(result, "toarray"):  # scipy sparse matrices
        result = result.toarray()
    if isinstance(result, (list, tuple)):
        try:
            result = np.asarray(result)
        except ValueError:  # ragged: one value per row
            result = _object_array(result)
    if not isinstance(result, np.ndarray):
        raise ModelError(
            f"a model method returned {type(result).__name__}; expected a DataFrame, Series, array or list"
        )
    if result.ndim == 0:
        raise ModelError("a model method returned a single value; expected one value per input row")
    if result.ndim == 1:
        return pd.DataFrame({"output_feature_0": result})
    if result.ndim == 2:
        return pd.DataFrame({f"output_feature_{i}": result[:, i] for i in range(result.shape[1])})
    return pd.DataFrame({"output_feature_0": _object_array(list(result))})


def _object_array(values: list[Any]) -> Any:
    import numpy as np

    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def conform_outputs(result: Any, spec: MethodSpec, rows: int) -> pd.DataFrame:
    """The raw result as exactly the signature's output columns (matched by name, else by position)."""
    import numpy as np

    outputs = spec.outputs
    if len(outputs) == 1 and outputs[0].shape and isinstance(result, np.ndarray) and result.ndim >= 2:
        result = _object_array(list(result))  # one vector output: each row of the array is one value
    frame = result_frame(result)
    if len(frame) != rows:
        raise ModelError(f"method {spec.name} returned {len(frame)} rows for {rows} input rows")
    names = [f.name for f in outputs]
    if list(frame.columns) == names:
        return frame
    folded = {str(c).lower(): c for c in frame.columns}
    if all(n.lower() in folded for n in names):
        picked = frame[[folded[n.lower()] for n in names]]
        picked.columns = names
        return picked
    if frame.shape[1] == len(names):
        return frame.set_axis(names, axis=1)
    raise ModelError(
        f"method {spec.name} returned {frame.shape[1]} column(s) ({', '.join(map(str, frame.columns))}); "
        f"its signature has {len(names)} output(s): {', '.join(names)}"
    )


def empty_outputs(spec: MethodSpec) -> pd.DataFrame:
    import pandas as pd

    from duckserve.inference_server.datatypes import empty_series

    return pd.DataFrame({f.name: empty_series(f) for f in spec.outputs})


# ---------------------------------------------------------------------------------------------
# pickling and requirements


def _installed_roots() -> list[str]:
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    roots.add(site.getusersitepackages())
    return [os.path.realpath(r) + os.sep for r in roots if r]


def local_modules(types: Iterable[type]) -> list[ModuleType]:
    """Modules of ``types`` (and their bases) that are plain files of the user's, not installed
    packages: those must travel inside the pickle, since the service's environment lacks them."""
    roots = _installed_roots()
    found: dict[str, ModuleType] = {}
    for cls in types:
        for klass in cls.__mro__:
            name = klass.__module__
            if name in found or name in ("__main__", "builtins") or name.split(".")[0] == "duckserve":
                continue
            module = sys.modules.get(name)
            path = getattr(module, "__file__", None)
            if module is None or path is None:
                continue
            if not os.path.realpath(path).startswith(tuple(roots)):
                found[name] = module
    return list(found.values())


def dump_pickle(obj: Any, path: Path, types: Iterable[type] = ()) -> None:
    """Pickle ``obj`` with cloudpickle: classes from ``__main__`` and from the user's local modules
    (found among ``types``) by value, installed packages by reference. `load_pickle` reads it back."""
    import cloudpickle

    registered = set(cloudpickle.list_registry_pickle_by_value())
    added = [m for m in local_modules(types) if m.__name__ not in registered]
    for module in added:
        cloudpickle.register_pickle_by_value(module)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            cloudpickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for module in added:
            cloudpickle.unregister_pickle_by_value(module)


def load_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def serving_device() -> str:
    """``cuda`` when this process serves on GPUs (the service asked for them and the host has them:
    the service sets ``DUCKSERVE_DEVICE=cuda``), else ``cpu``."""
    return "cuda" if os.environ.get("DUCKSERVE_DEVICE", "").lower() == "cuda" else "cpu"


#: import names whose distribution is named differently
DISTRIBUTIONS = {"sklearn": "scikit-learn", "cv2": "opencv-python", "PIL": "pillow", "yaml": "pyyaml"}


def pinned(module_name: str) -> str | None:
    """``scikit-learn==1.9.1`` for ``sklearn``; None when no installed distribution provides it."""
    top = module_name.split(".")[0]
    index: dict[str, list[str]] = getattr(
        importlib.metadata, "packages_distributions", dict
    )()  # Python 3.10+
    distributions = index.get(top) or [DISTRIBUTIONS.get(top, top)]
    for distribution in distributions:
        try:
            return f"{distribution}=={importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def requirement_name(requirement: str) -> str:
    """The normalized package name of a requirement: ``conda-forge::Scikit_Learn>=1`` -> ``scikit-learn``."""
    name = requirement.split("::")[-1].strip()
    for i, char in enumerate(name):
        if char in "=<>!~[; @":
            name = name[:i]
            break
    return name.lower().replace("_", "-").replace(".", "-")


def merge_requirements(user: Iterable[str], defaults: Iterable[str]) -> list[str]:
    """The user's requirements, plus each default whose package the user did not name."""
    merged = list(user)
    named = {requirement_name(r) for r in merged}
    for requirement in defaults:
        if requirement_name(requirement) not in named:
            merged.append(requirement)
            named.add(requirement_name(requirement))
    return merged
