"""The warehouse path: a model version run in-process, in the SQL session's own Python.

Snowflake runs a model either in a warehouse (only packages from its conda channel) or on SPCS (any
package). Here "the warehouse" is the Python that runs the SQL session: a dependency is available
there when it is installed at a compatible version. The seed's rules, decided when a version is
logged (`eligibility`):

- any PyPI requirement (``pip_requirements``, ``extra_pip_requirements``, the pip part of a
  ``conda_env``) means the model must run on SPCS: naming one is the documented way to keep a model
  out of the warehouse;
- so does a conda dependency with an explicit channel (``conda-forge::pytorch``, ``defaults::x``);
- every other dependency (the framework pins duckserve adds, conda names without a channel, the
  requirements an MLflow model recorded) must be installed here at a compatible version.

An eligible version answers ``MODEL(m, v)!method(args)`` in SQL and ``mv.run(df, function_name=...)``
without a service; the model is loaded once per process and called under a lock (models need not
be thread-safe, and DuckDB calls a UDF from several threads).
"""

from __future__ import annotations

import importlib.metadata
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from duckserve.errors import BuildError, ProgrammingError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from duckserve.inference_server.handlers.base import LoadedModel
    from duckserve.inference_server.manifest import MethodSpec

WAREHOUSE = "WAREHOUSE"
SPCS = "SPCS"

#: distributions that provide the same modules under another name (name asked -> names to look for)
DISTRIBUTION_ALIASES: dict[str, tuple[str, ...]] = {
    "xgboost": ("xgboost", "xgboost-cpu"),
    "xgboost-cpu": ("xgboost-cpu", "xgboost"),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "mlflow-skinny": ("mlflow-skinny", "mlflow"),
}


@dataclass
class Eligibility:
    """Where a version can run, and why not in the warehouse when it cannot."""

    runnable_in: list[str]
    reasons: list[str] = field(default_factory=list)

    @property
    def in_warehouse(self) -> bool:
        return WAREHOUSE in self.runnable_in

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (or of an alias providing the same modules)."""
    from duckserve.engine.environments import canonical_name

    for candidate in DISTRIBUTION_ALIASES.get(canonical_name(name), (name,)):
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _check_installed(name: str, specifier: str, entry: str) -> str | None:
    """None when ``name`` is installed at a version that satisfies ``specifier``, else the reason."""
    from duckserve.engine.versions import satisfies

    version = installed_version(name)
    if version is None:
        return f"{entry!r} is not installed in this session's Python (the warehouse)"
    if specifier:
        try:
            ok = satisfies(version, specifier)
        except ValueError:
            ok = False
        if not ok:
            return f"{entry!r} needs {name}{specifier}, but the warehouse has {name} {version}"
    return None


def eligibility(conda_dependencies: list[str], user_pip: list[str], default_pip: list[str],
                python_version: str) -> Eligibility:
    """Where a model with these dependencies can run (the seed's rules; see the module docstring).

    ``user_pip`` are the PyPI requirements the user asked for (they alone exclude the warehouse);
    ``default_pip`` the ones the model kind brings (they are checked like conda packages)."""
    from duckserve.engine.environments import _pip_requirement, conda_to_pypi

    reasons: list[str] = []
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python_version != current:
        reasons.append(f"it needs Python {python_version} and the warehouse runs Python {current}")
    if user_pip:
        reasons.append(
            f"it has PyPI requirements ({', '.join(user_pip)}): models logged with pip_requirements run on SPCS only"
        )
    channeled = [d for d in conda_dependencies if "::" in d]
    if channeled:
        reasons.append(
            f"its conda dependencies {', '.join(channeled)} name an explicit channel, and the warehouse has only "
            "its own channel"
        )
    for entry in conda_dependencies:
        if "::" in entry:
            continue
        try:
            translated = conda_to_pypi(entry, current)
        except BuildError:
            reasons.append(f"{entry!r} has no Python package the warehouse could provide")
            continue
        if translated is None:
            continue
        problem = _check_installed(translated[0], translated[1], entry)
        if problem:
            reasons.append(problem)
    for entry in default_pip:
        try:
            requirement = _pip_requirement(entry)
        except BuildError:
            reasons.append(f"{entry!r} is not a requirement the warehouse can check")
            continue
        if requirement is None or requirement.name is None:
            continue
        specifier = requirement.version.split(";")[0].strip()
        if specifier.startswith("["):  # extras: ignore them, check the version
            specifier = specifier.split("]", 1)[-1]
        if specifier.lstrip().startswith("@"):
            reasons.append(f"{entry!r} is a direct URL the warehouse cannot provide")
            continue
        problem = _check_installed(requirement.name, specifier, entry)
        if problem:
            reasons.append(problem)
    if reasons:
        return Eligibility([SPCS], reasons)
    return Eligibility([WAREHOUSE, SPCS])


def not_in_warehouse(label: str, version: str, reason: str) -> ProgrammingError:
    return ProgrammingError(
        f"model {label} version {version} cannot run in the warehouse: {reason}. Deploy it to a service "
        f"instead: mv.create_service(service_name=..., service_compute_pool=..., image_repo=...), then call "
        f"<service>!<method>(...) in SQL or mv.run(..., service_name=...)"
    )


# ---------------------------------------------------------------------------------------------
# loading and calling in process

_loaded: dict[str, tuple[float, LoadedModel, threading.Lock]] = {}
_loaded_lock = threading.Lock()


def load(package: Path) -> tuple[LoadedModel, threading.Lock]:
    """The package's model, loaded once per process (again when the package changed)."""
    from duckserve.inference_server.handlers import load_package
    from duckserve.inference_server.manifest import MANIFEST

    key = str(Path(package).resolve())
    stamp = (Path(package) / MANIFEST).stat().st_mtime
    with _loaded_lock:
        cached = _loaded.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        _, model = load_package(package)
        lock = threading.Lock()
        _loaded[key] = (stamp, model, lock)
        return model, lock


def call_frame(model: LoadedModel, lock: threading.Lock, label: str, method: MethodSpec,
               frame: pd.DataFrame) -> pd.DataFrame:
    """The method's outputs for ``frame`` (inputs by signature name), errors naming the function.

    Like the SQL functions, a row with a missing input is not passed to the model: its outputs are
    missing."""
    import numpy as np

    from duckserve.inference_server.errors import ModelError, ProtocolError

    try:
        missing = frame[[f.name for f in method.inputs]].isna().any(axis=1).to_numpy() if len(frame) else None
        with lock:
            if missing is None or not missing.any():
                return model.call(method.name, frame)
            kept = np.flatnonzero(~missing)
            out = model.call(method.name, frame.iloc[kept].reset_index(drop=True))
        out.index = kept
        return out.reindex(range(len(frame)))
    except ProtocolError as exc:
        raise ProgrammingError(f"{label}!{method.name.upper()}: {exc}") from exc
    except ModelError as exc:
        raise ProgrammingError(f"{label}!{method.name.upper()}: the model's answer does not fit its "
                               f"signature: {exc}") from exc


class WarehouseFunction:
    """One method of one model version as a vectorized function over Arrow columns.

    Strict like every SQL function here: rows with a NULL argument are not passed to the model and
    answer NULL."""

    def __init__(self, label: str, method: MethodSpec, package: Path) -> None:
        self.label = label
        self.method = method
        self.package = package

    def result_type(self) -> pa.DataType:
        import pyarrow as pa

        from duckserve.inference_server.datatypes import arrow_type

        if len(self.method.outputs) == 1:
            return arrow_type(self.method.outputs[0])
        return pa.struct([pa.field(f.name, arrow_type(f)) for f in self.method.outputs])

    def call(self, arguments: list[pa.Array | pa.ChunkedArray]) -> pa.Array:
        from duckserve.engine.client import strict_call

        if len(arguments) != len(self.method.inputs):
            raise ProgrammingError(
                f"{self.label}!{self.method.name.upper()} takes {len(self.method.inputs)} argument(s) "
                f"({self.method.sql_arguments}), got {len(arguments)}"
            )
        result_type = self.result_type()
        return strict_call(arguments, result_type, lambda columns: self._compute(columns, result_type))

    def _compute(self, columns: list[pa.Array], result_type: pa.DataType) -> pa.Array:
        import pandas as pd
        import pyarrow as pa

        from duckserve.inference_server.datatypes import arrow_to_series, to_arrow_array
        from duckserve.inference_server.errors import ServerError

        try:
            frame = pd.DataFrame({f.name: arrow_to_series(c, f, position=i)
                                  for i, (f, c) in enumerate(zip(self.method.inputs, columns), start=1)})
        except ServerError as exc:
            raise ProgrammingError(f"{self.label}!{self.method.name.upper()}: {exc}") from exc
        model, lock = load(self.package)
        out = call_frame(model, lock, self.label, self.method, frame)
        try:
            arrays = [to_arrow_array(out[f.name], f) for f in self.method.outputs]
        except ServerError as exc:
            raise ProgrammingError(f"{self.label}!{self.method.name.upper()}: {exc}") from exc
        return arrays[0] if len(arrays) == 1 else pa.StructArray.from_arrays(arrays, fields=list(result_type))
