"""Tiny custom models the tests deploy (each pickled by value with the model, as a user's local module is)."""

from __future__ import annotations

import time

import pandas as pd

from duckserve.model import CustomModel, inference_api


class PlusOne(CustomModel):
    """``predict``: Y = X + 1."""

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] + 1})


class Sleeper(CustomModel):
    """``double``: doubled = x * 2; a batch with a row whose ``seconds`` > 0 sleeps that long first."""

    @inference_api
    def double(self, df: pd.DataFrame) -> pd.DataFrame:
        if (df["seconds"] > 0).any():
            time.sleep(float(df["seconds"].max()))
        return pd.DataFrame({"doubled": df["x"] * 2})
