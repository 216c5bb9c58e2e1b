"""sentence-transformers: ``SentenceTransformer.encode``, one embedding (a FLOAT vector) per text.

Saved with ``SentenceTransformer.save`` (the weights, tokenizer and module configuration: the
package holds everything, nothing is fetched from a hub at load time) and loaded from there on the
service's device. ``encode`` of all-MiniLM-L6-v2 returns ``FLOAT[384]`` per row, a LIST in SQL.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from duckserve.inference_server.handlers.base import ModelHandler, pinned, sample_options, serving_device

if TYPE_CHECKING:
    import pandas as pd

MODEL_SUBDIR = "sentence_transformer"
METHODS = ("encode",)
#: rows per forward pass inside one request
ENCODE_BATCH_SIZE = 64


def hugging_face_pins() -> list[str]:
    """The Hugging Face stack pinned to the installed versions (torch with its local label, e.g.
    torch==2.13.0+cpu): transformers checks huggingface-hub in code, so it is pinned too."""
    pins = [pinned(m) for m in ("transformers", "torch", "tokenizers", "huggingface_hub", "safetensors")]
    return [p for p in pins if p]


class SentenceTransformerHandler(ModelHandler):
    name: ClassVar[str] = "sentence_transformers"
    description: ClassVar[str] = "sentence-transformers models (SentenceTransformer)"

    @classmethod
    def can_handle(cls, model: Any) -> bool:
        if "sentence_transformers" not in sys.modules or isinstance(model, type):
            return False
        from sentence_transformers import SentenceTransformer

        return isinstance(model, SentenceTransformer)

    @classmethod
    def default_methods(cls, model: Any) -> list[str]:
        return list(METHODS)

    @classmethod
    def invoke(cls, model: Any, method_name: str, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
        import numpy as np

        if frame.shape[1] != 1:
            raise ValueError(f"{method_name} takes one text column, got {frame.shape[1]} columns")
        texts = [str(v) for v in frame.iloc[:, 0].tolist()]
        embeddings = getattr(model, method_name)(
            texts, batch_size=int(options.get("batch_size", ENCODE_BATCH_SIZE)), convert_to_numpy=True,
            show_progress_bar=False,
        )
        rows = np.empty(len(texts), dtype=object)  # one vector per row, not one column per dimension
        for i, embedding in enumerate(np.asarray(embeddings)):
            rows[i] = embedding
        return rows

    @classmethod
    def default_dependencies(cls, model: Any) -> tuple[list[str], list[str]]:
        return [p for p in [pinned("sentence_transformers"), *hugging_face_pins()] if p], []

    @classmethod
    def runtime_modules(cls, manifest: Any) -> list[str]:
        return ["sentence_transformers"]

    @classmethod
    def save(cls, model: Any, model_dir: Path, sample_input: Any = None) -> dict[str, Any]:
        if not cls.can_handle(model):
            raise TypeError(f"{type(model).__module__}.{type(model).__qualname__} is not a SentenceTransformer")
        target = Path(model_dir) / MODEL_SUBDIR
        target.parent.mkdir(parents=True, exist_ok=True)
        model.save(str(target))
        return {"options": sample_options(sample_input), "artifacts": {}}

    @classmethod
    def load_object(cls, model_dir: Path, options: dict[str, Any]) -> Any:
        from sentence_transformers import SentenceTransformer

        device = serving_device()
        if device == "cuda":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return SentenceTransformer(str(Path(model_dir) / MODEL_SUBDIR), device=device)
