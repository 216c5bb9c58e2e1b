"""The CHURN_SVC service as a dbt Python model: train a small churn model, log it in duckserve's
registry and deploy it; the table this model builds is one row describing the service.

With ``type: duckserve``, ``session`` is the duckserve connection dbt runs on, so the registry works
on it as in a notebook. Idempotent: a version already logged is reused, and create_service on a
running service of the same version changes nothing, so a second ``dbt run`` builds nothing.
customer_churn_scores depends on this model, so dbt deploys the service before it scores.
"""

import numpy as np
import pandas as pd

MODEL, VERSION = "churn_model", "v1"
FEATURES = ["NUMBER_OF_ORDERS", "LIFETIME_VALUE", "DAYS_SINCE_LAST_ORDER"]


def training_data(n=600, seed=7):
    """Synthetic history: customers who ordered rarely, spent little and not lately tended to leave."""
    rng = np.random.default_rng(seed)
    orders = rng.poisson(3, n) + 1
    value = orders * rng.gamma(4.0, 8.0, n)
    days = rng.integers(0, 150, n)
    risk = 1.5 - 0.6 * orders - 0.01 * value + 0.035 * days + rng.normal(0, 0.8, n)
    X = pd.DataFrame({"NUMBER_OF_ORDERS": orders, "LIFETIME_VALUE": value, "DAYS_SINCE_LAST_ORDER": days},
                     dtype="float64")
    return X, (risk > 0).astype(int)


def model(dbt, session):
    from sklearn.linear_model import LogisticRegression

    from duckserve.errors import ObjectNotFound
    from duckserve.registry import Registry

    registry = Registry(session)
    try:
        version = registry.get_model(MODEL).version(VERSION)
    except ObjectNotFound:
        X, y = training_data()
        version = registry.log_model(LogisticRegression(max_iter=1000).fit(X, y), model_name=MODEL,
                                     version_name=VERSION, sample_input_data=X.head(20))
    info = version.create_service(service_name=dbt.config.get("churn_service", "churn_svc"),
                                  service_compute_pool=dbt.config.get("compute_pool", "jaffle_pool"),
                                  image_repo=dbt.config.get("image_repo", "jaffle_images"), max_instances=1)
    return pd.DataFrame([{"service_name": info["service_name"], "status": info["status"],
                          "model_name": MODEL, "version_name": VERSION}])
