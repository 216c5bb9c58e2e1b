"""XGBoost: the scikit-learn API (XGBRegressor, XGBClassifier, XGBRanker, ...) and ``xgboost.Booster``.

Saved in XGBoost's own binary format (``model.ubj``), which newer XGBoost versions read, so an
environment need not hold the exact version that trained the model. On a GPU service the model is
switched to ``device="cuda"`` when it loads.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from duckserve.inference_server.handlers.base import ModelHandler, pinned, sample_options, serving_device

if TYPE_CHECKING:
    import pandas as pd

MODEL_FILE = "model.ubj"
SKLEARN_METHODS = ("predict", "predict_proba")


def features(model: Any, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
    """The frame as the estimator expects it: a 1-D column for 1-D samples, else columns renamed to the
    names the model was fitted with (the signature may name them differently), else an array."""
    if options.get("input_ndim") == 1:
        return frame.iloc[:, 0].to_numpy()
    names = getattr(model, "feature_names_in_", None)
    if names is None and hasattr(model, "feature_names"):  # xgboost.Booster
        names = model.feature_names
    if names is not None and len(names) == frame.shape[1]:
        names = [str(n) for n in names]
        return frame if list(frame.columns) == names else frame.set_axis(names, axis=1)
    return frame.to_numpy()


class XGBoostHandler(ModelHandler):
    name: ClassVar[str] = "xgboost"
    description: ClassVar[str] = "XGBoost models (XGBRegressor, XGBClassifier, ... and xgboost.Booster)"

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        if "xgboost" not in sys.modules or isinstance(model, type):
            return False
        import xgboost

        return isinstance(model, (xgboost.XGBModel, xgboost.Booster))

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        import xgboost

        if isinstance(model, xgboost.Booster):
            return ["predict"]
        return [m for m in SKLEARN_METHODS if callable(getattr(model, m, None))]

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        import xgboost

        data = features(model, frame, options)
        if isinstance(model, xgboost.Booster):
            if getattr(data, "ndim", 2) == 1:
                data = data.reshape(-1, 1)
            return getattr(model, method_name)(xgboost.DMatrix(data))
        return getattr(model, method_name)(data)

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        import xgboost

        # the conda name: the environment builder picks xgboost-cpu or xgboost by the service's accelerator
        conda = [f"xgboost=={xgboost.__version__}"]
        if isinstance(model, xgboost.XGBModel):
            sklearn = pinned("sklearn")  # the scikit-learn API of xgboost imports scikit-learn
            if sklearn:
                conda.append(sklearn)
        return conda, []

    @classmethod
    def runtime_modules(cls, manifest: Any) -> list[str]:
        return ["xgboost"]

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        if not cls.can_handle(model):
            raise TypeError(f"{type(model).__module__}.{type(model).__qualname__} is not an XGBoost model")
        import xgboost

        options = sample_options(sample_input)
        if isinstance(model, xgboost.XGBModel):
            try:
                model.get_booster()
            except xgboost.core.XGBoostError:
                raise ValueError(f"{type(model).__name__} is not fitted: call fit() before logging it") from None
            # the xgboost class itself (a user's subclass would need its own code in the environment)
            klass = next(k for k in type(model).__mro__ if k.__module__.startswith("xgboost"))
            options.update(kind="sklearn", estimator=f"{klass.__module__}:{klass.__qualname__}")
        else:
            options.update(kind="booster")
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        model.save_model(str(Path(model_dir) / MODEL_FILE))
        return {"options": options, "artifacts": {}}

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        import xgboost

        path = str(Path(model_dir) / MODEL_FILE)
        if options.get("kind") == "sklearn":
            module_name, class_name = options["estimator"].split(":")
            model = getattr(importlib.import_module(module_name), class_name)()
            model.load_model(path)
            if serving_device() == "cuda":
                model.set_params(device="cuda")
            return model
        booster = xgboost.Booster()
        booster.load_model(path)
        if serving_device() == "cuda":
            booster.set_param({"device": "cuda"})
        return booster
