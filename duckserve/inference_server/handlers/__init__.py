"""Model handlers, one module per framework, and the functions that pick, save and load with them.

To add a framework, write ``handlers/<framework>.py`` with a `ModelHandler` subclass and add one
line to `HANDLERS`. Order matters: the first handler whose ``can_handle`` accepts a model wins, so
specific frameworks (an XGBoost estimator is also a scikit-learn estimator) go before general ones.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from typing import Any

from duckserve.inference_server.handlers.base import (
    LoadedModel,
    ModelHandler,
    merge_requirements,
    requirement_name,
)
from duckserve.inference_server.manifest import CODE_DIR, MODEL_DIR, Manifest, MethodSpec

__all__ = [
    "HANDLERS",
    "LoadedModel",
    "ModelHandler",
    "get_handler",
    "handler_for",
    "load_package",
    "save_package",
]

#: handler name -> "module:class", in the order `handler_for` tries them
HANDLERS: dict[str, str] = {
    "custom": "duckserve.inference_server.handlers.custom:CustomModelHandler",
    "mlflow": "duckserve.inference_server.handlers.mlflow:MLflowHandler",
    # XGBoost and LightGBM estimators are scikit-learn estimators too: before sklearn
    "xgboost": "duckserve.inference_server.handlers.xgboost:XGBoostHandler",
    "lightgbm": "duckserve.inference_server.handlers.lightgbm:LightGBMHandler",
    # a SentenceTransformer is a torch.nn.Module too: before pytorch
    "sentence_transformers": "duckserve.inference_server.handlers.sentence_transformers:SentenceTransformerHandler",
    "pytorch": "duckserve.inference_server.handlers.pytorch:PyTorchHandler",
    "transformers": "duckserve.inference_server.handlers.transformers:TransformersPipelineHandler",
    "sklearn": "duckserve.inference_server.handlers.sklearn:SklearnHandler",
}


def get_handler(name: str) -> type[ModelHandler]:
    """The handler registered as ``name`` (the manifest's ``handler`` field)."""
    try:
        module_name, class_name = HANDLERS[name].split(":")
    except KeyError:
        raise KeyError(f"no model handler {name!r}; known handlers: {', '.join(HANDLERS)}") from None
    handler: type[ModelHandler] = getattr(importlib.import_module(module_name), class_name)
    return handler


def handler_for(model: Any) -> type[ModelHandler]:
    """The handler that serves ``model``; TypeError naming the type and the supported kinds if none does."""
    handlers = [get_handler(name) for name in HANDLERS]
    for handler in handlers:
        if handler.can_handle(model):
            return handler
    supported = "; ".join(h.description for h in handlers)
    if isinstance(model, type):
        kind = (
            f"the class {model.__module__}.{model.__qualname__} (pass an instance, e.g. a fitted estimator)"
        )
    else:
        kind = f"a {type(model).__module__}.{type(model).__qualname__}"
    raise TypeError(f"duckserve cannot serve {kind}: supported kinds are {supported}")


def load_package(package_dir: Path | str) -> tuple[Manifest, LoadedModel]:
    """Read a package's manifest and load its model, with ``<package>/code`` on sys.path first."""
    package_dir = Path(package_dir)
    manifest = Manifest.read(package_dir)
    code_dir = package_dir / CODE_DIR
    if code_dir.is_dir() and str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    return manifest, get_handler(manifest.handler).load(package_dir, manifest)


def save_package(
    model: Any,
    package_dir: Path | str,
    *,
    name: str,
    version: str,
    sample_input: Any = None,
    methods: list[str] | None = None,
    signatures: dict[str, MethodSpec] | None = None,
    conda_dependencies: list[str] | None = None,
    pip_requirements: list[str] | None = None,
    code_paths: list[str] | None = None,
    python_version: str | None = None,
    comment: str | None = None,
) -> Manifest:
    """Write ``model`` as a package: artifacts under ``model/``, ``code_paths`` copied under ``code/``,
    and the manifest. Signatures come from ``signatures`` or are inferred from ``sample_input``;
    the handler's default dependencies are added unless the user named the same package."""
    handler = handler_for(model)
    package_dir = Path(package_dir)
    method_names = methods or handler.default_methods(model)
    if not method_names:
        raise ValueError(f"{type(model).__name__} has no methods to serve")
    specs: list[MethodSpec] = []
    for method_name in method_names:
        if signatures and method_name in signatures:
            specs.append(signatures[method_name])
        elif sample_input is None and handler.name != "mlflow":  # an MLflow model brings its signature
            raise ValueError(
                f"method {method_name}: pass sample_input (to infer its signature) or its signature"
            )
        else:
            specs.append(handler.infer_signature(model, method_name, sample_input))
    (package_dir / MODEL_DIR).mkdir(parents=True, exist_ok=True)
    saved = handler.save(model, package_dir / MODEL_DIR, sample_input)
    copied: list[str] = []
    for code_path in code_paths or []:
        source = Path(code_path)
        target = package_dir / CODE_DIR / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        copied.append(source.name)
    default_conda, default_pip = handler.default_dependencies(model)
    user_named = {requirement_name(r) for r in [*(conda_dependencies or []), *(pip_requirements or [])]}
    default_conda = [r for r in default_conda if requirement_name(r) not in user_named]
    default_pip = [r for r in default_pip if requirement_name(r) not in user_named]
    manifest = Manifest(
        name=name,
        version=version,
        handler=handler.name,
        methods=specs,
        python_version=python_version or f"{sys.version_info.major}.{sys.version_info.minor}",
        conda_dependencies=merge_requirements(conda_dependencies or [], default_conda),
        pip_requirements=merge_requirements(pip_requirements or [], default_pip),
        artifacts=saved.get("artifacts", {}),
        code_paths=copied,
        options=saved.get("options", {}),
        comment=comment,
    )
    manifest.write(package_dir)
    return manifest
