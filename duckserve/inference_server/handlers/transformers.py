"""Hugging Face ``transformers`` pipelines: the pipeline's ``__call__`` (SQL: ``svc!__call__(text)``).

Saved with ``save_pretrained`` (model, tokenizer and configuration; the task is kept in the
manifest) and rebuilt with ``transformers.pipeline(task, model=<saved dir>)`` on the service's device.

Inputs: one column is passed as a list of values (texts); several columns as one dict per row,
keyed by column name (``question`` and ``context`` for question answering). Outputs: a dict per
row (``{"label": ..., "score": ...}``) becomes one column per key; a list of dicts per row (top-k,
token classification) becomes a JSON string; plain values and vectors stay as they are.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from duckserve.inference_server.handlers.base import ModelHandler, sample_options, serving_device
from duckserve.inference_server.handlers.sentence_transformers import hugging_face_pins

if TYPE_CHECKING:
    import pandas as pd

PIPELINE_SUBDIR = "pipeline"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def outputs_frame(results: list[Any]) -> Any:
    import numpy as np
    import pandas as pd

    if results and all(isinstance(r, dict) for r in results):
        return pd.DataFrame.from_records(results)
    if results and all(isinstance(r, list) and all(isinstance(i, dict) for i in r) for r in results):
        return pd.DataFrame({"outputs": [json.dumps(_jsonable(r)) for r in results]})
    rows = np.empty(len(results), dtype=object)
    for i, value in enumerate(results):
        rows[i] = np.asarray(value) if isinstance(value, list) else value
    return rows


class TransformersPipelineHandler(ModelHandler):
    name: ClassVar[str] = "transformers"
    description: ClassVar[str] = "Hugging Face transformers pipelines (transformers.Pipeline)"

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        if "transformers" not in sys.modules or isinstance(model, type):
            return False
        from transformers import Pipeline

        return isinstance(model, Pipeline)

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        return ["__call__"]

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        if frame.shape[1] == 1:
            inputs: Any = frame.iloc[:, 0].tolist()
        else:
            inputs = frame.to_dict(orient="records")
        results = getattr(model, method_name)(inputs, **options.get("call_kwargs", {}))
        if isinstance(results, dict):  # some pipelines answer one input without a list
            results = [results]
        return outputs_frame(list(results))

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        return hugging_face_pins(), []

    @classmethod
    def runtime_modules(cls, manifest: Any) -> list[str]:
        return ["transformers"]

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        if not cls.can_handle(model):
            raise TypeError(f"{type(model).__module__}.{type(model).__qualname__} is not a transformers Pipeline")
        target = Path(model_dir) / PIPELINE_SUBDIR
        target.parent.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(target))
        options = sample_options(sample_input)
        options["task"] = model.task
        return {"options": options, "artifacts": {}}

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        import transformers

        device = serving_device()
        if device == "cuda":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return transformers.pipeline(options["task"], model=str(Path(model_dir) / PIPELINE_SUBDIR), device=device)
