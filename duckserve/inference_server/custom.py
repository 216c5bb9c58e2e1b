"""The custom-model API, mirroring ``snowflake.ml.model.custom_model``.

A custom model subclasses `CustomModel`, marks its methods with `inference_api`, and finds its files
and sub-models through its `ModelContext`::

    class Forecaster(CustomModel):
        def __init__(self, context: ModelContext) -> None:
            super().__init__(context)
            self.table = pd.read_csv(context.path("table"))

        @inference_api
        def predict(self, df: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"demand": df["f1"].map(self.table["demand"])})

    model = Forecaster(ModelContext(artifacts={"table": "demand.csv"}))

When the package is loaded inside a service, the artifacts live at new paths: the class is
instantiated again with a context that points there, so read artifacts in ``__init__``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

_INFERENCE_API = "_is_inference_api"
F = TypeVar("F", bound=Callable[..., Any])


class ModelContext:
    """The files (artifacts) and sub-models a custom model uses.

    ``ModelContext(artifacts={"vocab": "vocab.json"}, models={"clf": fitted_estimator})``; keyword
    arguments are sorted by value: a string or path is an artifact, anything else a sub-model.
    """

    def __init__(
        self,
        artifacts: dict[str, str] | None = None,
        models: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.artifacts: dict[str, str] = {name: os.fspath(path) for name, path in (artifacts or {}).items()}
        self.model_refs: dict[str, Any] = dict(models or {})
        for name, value in kwargs.items():
            if isinstance(value, (str, os.PathLike)):
                self.artifacts[name] = os.fspath(value)
            else:
                self.model_refs[name] = value
        both = set(self.artifacts) & set(self.model_refs)
        if both:
            raise ValueError(f"ModelContext: {', '.join(sorted(both))} named both an artifact and a model")

    def path(self, name: str) -> str:
        """The file path of artifact ``name``."""
        try:
            return self.artifacts[name]
        except KeyError:
            raise KeyError(
                f"no artifact {name!r} in this context; artifacts: {sorted(self.artifacts)}"
            ) from None

    def model_ref(self, name: str) -> Any:
        """The sub-model ``name``."""
        try:
            return self.model_refs[name]
        except KeyError:
            raise KeyError(f"no model {name!r} in this context; models: {sorted(self.model_refs)}") from None

    def __getitem__(self, name: str) -> Any:
        if name in self.artifacts:
            return self.artifacts[name]
        if name in self.model_refs:
            return self.model_refs[name]
        raise KeyError(f"no artifact or model {name!r} in this context")

    def __repr__(self) -> str:
        return f"ModelContext(artifacts={self.artifacts!r}, models={sorted(self.model_refs)!r})"


def inference_api(func: F) -> F:
    """Mark a method of a `CustomModel` as callable from SQL: it takes a DataFrame, returns a DataFrame."""
    setattr(func, _INFERENCE_API, True)
    return func


class CustomModel:
    """Base class of custom models; see the module docstring."""

    def __init__(self, context: ModelContext | None = None) -> None:
        self.context = context if context is not None else ModelContext()

    @classmethod
    def inference_methods(cls) -> list[str]:
        """Names of the ``@inference_api`` methods, in definition order (base classes first)."""
        names: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            for name, attribute in vars(klass).items():
                if getattr(attribute, _INFERENCE_API, False):
                    names[name] = None
        return [name for name in names if getattr(getattr(cls, name, None), _INFERENCE_API, False)]
