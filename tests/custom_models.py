"""Tiny custom models the tests deploy (each pickled by value with the model, as a user's local module is)."""

from __future__ import annotations

import time

import pandas as pd

from duckserve.model import CustomModel, ModelContext, inference_api


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


class Plus(CustomModel):
    """``predict`` adds the version's offset (read from its artifact), so a row tells which version answered."""

    def __init__(self, context: ModelContext) -> None:
        super().__init__(context)
        with open(self.context.path("offset")) as handle:
            self.offset = float(handle.read())

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] + self.offset})


class Busy(CustomModel):
    """``predict`` adds one and takes 50 ms per batch."""

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        time.sleep(0.05)
        return pd.DataFrame({"Y": X["X"] + 1})
