"""LightGBM: the scikit-learn API (LGBMRegressor, LGBMClassifier, LGBMRanker) and ``lightgbm.Booster``.

A Booster is saved in LightGBM's text format (``model.txt``); an estimator of the scikit-learn API
is pickled (its wrapper keeps state the text format lacks, such as the classes).
"""

from __future__ import annotations

import sys
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
from duckserve.inference_server.handlers.xgboost import features

if TYPE_CHECKING:
    import pandas as pd

MODEL_FILE = "model.txt"
SKLEARN_METHODS = ("predict", "predict_proba")


class LightGBMHandler(ModelHandler):
    name: ClassVar[str] = "lightgbm"
    description: ClassVar[str] = "LightGBM models (LGBMRegressor, LGBMClassifier, ... and lightgbm.Booster)"

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        if "lightgbm" not in sys.modules or isinstance(model, type):
            return False
        import lightgbm

        return isinstance(model, (lightgbm.LGBMModel, lightgbm.Booster))

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        import lightgbm

        if isinstance(model, lightgbm.Booster):
            return ["predict"]
        return [m for m in SKLEARN_METHODS if callable(getattr(model, m, None))]

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        import lightgbm

        if isinstance(model, lightgbm.Booster):
            data = frame.to_numpy()  # by position: the Booster checks no names
            return getattr(model, method_name)(data)
        return getattr(model, method_name)(features(model, frame, options))

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        import lightgbm

        conda = [p for p in (pinned("lightgbm"),) if p]
        if isinstance(model, lightgbm.LGBMModel):
            sklearn = pinned("sklearn")
            if sklearn:
                conda.append(sklearn)
        return conda, []

    @classmethod
    def runtime_modules(cls, manifest: Any) -> list[str]:
        return ["lightgbm"]

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        if not cls.can_handle(model):
            raise TypeError(f"{type(model).__module__}.{type(model).__qualname__} is not a LightGBM model")
        import lightgbm

        options = sample_options(sample_input)
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(model, lightgbm.Booster):
            model.save_model(str(model_dir / MODEL_FILE))
            options["kind"] = "booster"
        else:
            if not getattr(model, "fitted_", False) and getattr(model, "_Booster", None) is None:
                raise ValueError(f"{type(model).__name__} is not fitted: call fit() before logging it")
            dump_pickle(model, model_dir / PICKLE_FILE, [type(model)])
            options["kind"] = "sklearn"
        return {"options": options, "artifacts": {}}

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        import lightgbm

        if options.get("kind") == "booster":
            return lightgbm.Booster(model_file=str(Path(model_dir) / MODEL_FILE))
        return load_pickle(Path(model_dir) / PICKLE_FILE)
