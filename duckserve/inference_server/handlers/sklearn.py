"""scikit-learn estimators and pipelines (and other estimators built on sklearn's BaseEstimator)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from duckserve.inference_server.handlers.base import (
    PICKLE_FILE,
    ModelHandler,
    dump_pickle,
    load_pickle,
    pinned,
    sample_options,
)

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("predict", "predict_proba", "decision_function", "transform")


def _estimators(model: Any) -> list[Any]:
    """The model and every estimator nested in it (pipeline steps, column transformers, ...)."""
    from sklearn.base import BaseEstimator

    found = [model]
    for value in model.get_params(deep=True).values():
        if isinstance(value, BaseEstimator):
            found.append(value)
        elif isinstance(value, (list, tuple)):  # Pipeline.steps, ColumnTransformer.transformers
            for item in value:
                parts = item if isinstance(item, tuple) else (item,)
                found.extend(p for p in parts if isinstance(p, BaseEstimator))
    return found


class SklearnHandler(ModelHandler):
    name: ClassVar[str] = "sklearn"
    description: ClassVar[str] = "scikit-learn estimators and pipelines"
    cpu_only: ClassVar[bool] = True

    @classmethod
    def runtime_modules(cls, manifest: Any) -> list[str]:
        return ["sklearn"]

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        if "sklearn" not in sys.modules or isinstance(model, type):
            return False
        from sklearn.base import BaseEstimator

        return isinstance(model, BaseEstimator)

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        return [m for m in METHODS if callable(getattr(model, m, None))]

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        if options.get("input_ndim") == 1:
            features: Any = frame.iloc[:, 0].to_numpy()
        elif hasattr(model, "feature_names_in_"):
            names = list(model.feature_names_in_)
            if _takes_plain_arrays(model, frame):
                # columns already conformed to the signature by name and order: skip sklearn's
                # per-call DataFrame validation, the largest cost of a small batch
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*does not have valid feature names")
                    return getattr(model, method_name)(frame.to_numpy())
            features = frame if list(frame.columns) == names else frame.set_axis(names, axis=1)
        else:
            features = frame.to_numpy()
        return getattr(model, method_name)(features)

    @classmethod
    def invoke_block(cls, model: Any, method_name: str, block: Any, options: dict[str, Any]) -> Any:
        module = type(model).__module__
        if options.get("input_ndim") == 1 or module.startswith(("sklearn.pipeline", "sklearn.compose")):
            return NotImplemented
        with warnings.catch_warnings():  # fitted on a DataFrame, called with its columns in order
            warnings.filterwarnings("ignore", message=".*does not have valid feature names")
            return _call_checked_finite(getattr(model, method_name), block)

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        modules = ["sklearn"] + [type(e).__module__ for e in _estimators(model)]
        pins: list[str] = []
        for module in modules:
            pin = pinned(module)
            if pin is not None and pin not in pins:
                pins.append(pin)
        return pins, []

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        if not cls.can_handle(model):
            raise TypeError(
                f"{type(model).__module__}.{type(model).__qualname__} is not a scikit-learn estimator"
            )
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError:
            raise ValueError(f"{type(model).__name__} is not fitted: call fit() before logging it") from None
        dump_pickle(model, Path(model_dir) / PICKLE_FILE, [type(e) for e in _estimators(model)])
        return {"options": sample_options(sample_input), "artifacts": {}}

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        return load_pickle(Path(model_dir) / PICKLE_FILE)


def _call_checked_finite(method: Any, block: Any) -> Any:
    """``method(block)``, telling scikit-learn to skip its own finiteness check when the block is known
    to be finite: a finite sum means every value is (NaN or an infinity makes the sum NaN or infinite),
    the test scikit-learn itself starts with. A block with NaN or infinities (or an overflowing sum)
    gets the usual check and its error. One row: about 15 us of a 100 us predict."""
    import math

    import sklearn

    if block.dtype.kind == "f" and math.isfinite(block.sum()):
        with sklearn.config_context(assume_finite=True):
            return method(block)
    return method(block)


def _takes_plain_arrays(model: Any, frame: pd.DataFrame) -> bool:
    """A single estimator (not a pipeline or column transformer, which may select columns by name)
    whose inputs are all numeric."""
    module = type(model).__module__
    if module.startswith(("sklearn.pipeline", "sklearn.compose")):
        return False
    return all(dtype.kind in "fiub" for dtype in frame.dtypes if hasattr(dtype, "kind"))
