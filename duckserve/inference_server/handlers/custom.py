"""Custom models: subclasses of `duckserve.model.CustomModel`.

Saved as the pickled class (by value when it lives in ``__main__`` or a local file), the context's
artifacts copied to ``model/artifacts/<name>/``, and each sub-model saved by its own handler under
``model/models/<name>/``. Loading instantiates the class again with a context pointing there.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from duckserve.inference_server.custom import CustomModel, ModelContext
from duckserve.inference_server.handlers.base import (
    PICKLE_FILE,
    ModelHandler,
    dump_pickle,
    load_pickle,
    merge_requirements,
    pinned,
    sample_options,
)
from duckserve.inference_server.manifest import MODEL_DIR

if TYPE_CHECKING:
    import pandas as pd

ARTIFACTS_DIR = "artifacts"
MODELS_DIR = "models"


class CustomModelHandler(ModelHandler):
    name: ClassVar[str] = "custom"
    description: ClassVar[str] = "duckserve.model.CustomModel subclasses"

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        return isinstance(model, CustomModel)

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        return type(model).inference_methods()

    @classmethod
    def check_method(cls, model: Any, method_name: str) -> None:
        if method_name not in cls.default_methods(model):
            available = ", ".join(cls.default_methods(model)) or "none (mark methods with @inference_api)"
            raise ValueError(
                f"{type(model).__name__}.{method_name} is not an @inference_api method; available: {available}"
            )

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        return getattr(model, method_name)(frame)

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        from duckserve.inference_server.handlers import handler_for

        conda = [p for p in (pinned("cloudpickle"), pinned("pandas")) if p]
        pip: list[str] = []
        for sub_model in model.context.model_refs.values():
            sub_conda, sub_pip = handler_for(sub_model).default_dependencies(sub_model)
            conda = merge_requirements(conda, sub_conda)
            pip = merge_requirements(pip, sub_pip)
        return conda, pip

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        from duckserve.inference_server.handlers import handler_for

        if not cls.can_handle(model):
            raise TypeError(f"{type(model).__module__}.{type(model).__qualname__} is not a CustomModel")
        model_class = type(model)
        try:
            inspect.signature(model_class).bind(ModelContext())
        except TypeError:
            raise TypeError(
                f"{model_class.__name__}.__init__ must accept the context as its only required argument "
                "(it is called again with the service's context when the model loads)"
            ) from None
        model_dir = Path(model_dir)
        context: ModelContext = model.context
        artifacts: dict[str, str] = {}
        for name, source in context.artifacts.items():
            source_path = Path(source)
            if not source_path.exists():
                raise FileNotFoundError(f"artifact {name!r}: {source} does not exist")
            target = model_dir / ARTIFACTS_DIR / name / source_path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source_path.is_dir():
                shutil.copytree(source_path, target, dirs_exist_ok=True)
            else:
                shutil.copy2(source_path, target)
            artifacts[name] = target.relative_to(model_dir).as_posix()
        models: dict[str, dict[str, Any]] = {}
        for name, sub_model in context.model_refs.items():
            handler = handler_for(sub_model)
            saved = handler.save(sub_model, model_dir / MODELS_DIR / name)
            models[name] = {"handler": handler.name, "options": saved.get("options", {})}
        dump_pickle(model_class, model_dir / PICKLE_FILE, [model_class])
        options = {**sample_options(sample_input), "artifacts": artifacts, "models": models}
        return {
            "options": options,
            "artifacts": {name: f"{MODEL_DIR}/{path}" for name, path in artifacts.items()},
        }

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        from duckserve.inference_server.handlers import get_handler

        model_dir = Path(model_dir)
        model_class = load_pickle(model_dir / PICKLE_FILE)
        artifacts = {name: str(model_dir / path) for name, path in options.get("artifacts", {}).items()}
        models = {
            name: get_handler(info["handler"]).load_object(
                model_dir / MODELS_DIR / name, info.get("options", {})
            )
            for name, info in options.get("models", {}).items()
        }
        return model_class(ModelContext(artifacts=artifacts, models=models))
