"""Train a small churn model, log it in the registry and deploy it as the service CHURN_SVC.

`duckserve run` calls ``setup(conn, vars)`` before the seeds and models. Both steps are
idempotent: a version already logged is reused, and create_service on a running service with the
same model changes nothing, so a second run of the project costs no build.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from duckserve.errors import ObjectNotFound
from duckserve.registry import Registry

MODEL, VERSION, SERVICE = "churn_model", "v1", "churn_svc"
FEATURES = ["NUMBER_OF_ORDERS", "LIFETIME_VALUE", "DAYS_SINCE_LAST_ORDER"]


def training_data(n: int = 600, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic history: customers who ordered rarely, spent little and not lately tended to leave."""
    rng = np.random.default_rng(seed)
    orders = rng.poisson(3, n) + 1
    value = orders * rng.gamma(4.0, 8.0, n)
    days = rng.integers(0, 150, n)
    risk = 1.5 - 0.6 * orders - 0.01 * value + 0.035 * days + rng.normal(0, 0.8, n)
    X = pd.DataFrame({"NUMBER_OF_ORDERS": orders, "LIFETIME_VALUE": value, "DAYS_SINCE_LAST_ORDER": days},
                     dtype="float64")
    return X, (risk > 0).astype(int)


def setup(conn: Any, vars: dict[str, Any]) -> str:
    registry = Registry(conn)
    try:
        version = registry.get_model(MODEL).version(VERSION)
    except ObjectNotFound:
        X, y = training_data()
        version = registry.log_model(LogisticRegression(max_iter=1000).fit(X, y), model_name=MODEL,
                                     version_name=VERSION, sample_input_data=X.head(20))
    info = version.create_service(service_name=SERVICE, service_compute_pool=vars["compute_pool"],
                                  image_repo=vars["image_repo"], max_instances=1)
    return f"{info['service_name']} {info['status']}"
