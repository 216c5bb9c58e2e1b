"""Tiny custom models the tests deploy (each pickled by value with the model, as a user's local module is)."""

from __future__ import annotations

import pandas as pd

from duckserve.model import CustomModel, inference_api


class PlusOne(CustomModel):
    """``predict``: Y = X + 1."""

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] + 1})
