"""The custom-model API (``from duckserve.model import CustomModel, ModelContext, inference_api``),
mirroring ``snowflake.ml.model.custom_model``."""

from duckserve.inference_server.custom import CustomModel, ModelContext, inference_api

__all__ = ["CustomModel", "ModelContext", "inference_api"]
