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
from duckserve.inference_server.errors import InvalidParameters
from duckserve.inference_server.handlers.base import (
    PICKLE_FILE,
    ModelHandler,
    dump_pickle,
    ignored_params,
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
#: the parameter types checked (by annotation, else by the default's type), as MLflow's ParamSpec does
PARAMETER_TYPES: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


def keyword_parameters(method: Any) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of a bound method, by name."""
    return {p.name: p for p in inspect.signature(method).parameters.values() if p.kind is p.KEYWORD_ONLY}


def _parameter_type(parameter: inspect.Parameter) -> type | None:
    annotation = parameter.annotation
    if isinstance(annotation, str):
        return PARAMETER_TYPES.get(annotation)
    if annotation in PARAMETER_TYPES.values():
        return annotation  # type: ignore[no-any-return]
    default = parameter.default
    return type(default) if type(default) in PARAMETER_TYPES.values() else None


def _checked_value(value: Any, expected: type | None) -> Any:
    if expected is None:
        return value
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise ValueError(f"expects {expected.__name__}, got {value!r} ({type(value).__name__})")


def checked_params(params: Any, accepted: dict[str, inspect.Parameter]) -> dict[str, Any]:
    """The keyword arguments for a request's ``params``: unknown names ignored with a warning,
    absent ones left to their defaults, the others checked against their type; `InvalidParameters`
    for a ``params`` that is not an object, a value of the wrong type or a required one missing."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParameters(f"Parameters must be a dictionary. Got type '{type(params).__name__}'.")
    unknown = [name for name in params if name not in accepted]
    if unknown:
        ignored_params({name: params[name] for name in unknown},
                       f"unrecognized params (supported: {', '.join(accepted)})")
    chosen: dict[str, Any] = {}
    invalid: list[str] = []
    for name, parameter in accepted.items():
        if name not in params:
            if parameter.default is parameter.empty:
                invalid.append(f"{name}: required and not given")
            continue
        try:
            chosen[name] = _checked_value(params[name], _parameter_type(parameter))
        except ValueError as exc:
            invalid.append(f"{name}: {exc}")
    if invalid:
        raise InvalidParameters(f"Invalid parameters found: {'; '.join(invalid)}")
    return chosen


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
    def invoke_params(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any],
                      params: Any) -> Any:
        """A method's keyword-only parameters are its inference parameters (as in Snowflake's
        ``def predict(self, df, *, temperature: float = 1.0)``): a request's ``params`` are checked
        against them as MLflow checks a params schema (`checked_params`)."""
        method = getattr(model, method_name)
        accepted = keyword_parameters(method)
        if not accepted:
            if params:
                ignored_params(params, f"{type(model).__name__}.{method_name} has no keyword-only parameters")
            return method(frame)
        return method(frame, **checked_params(params, accepted))

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
