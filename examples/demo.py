"""The duckserve demo: from a trained model to `svc!predict(...)` over 200,000 rows of SQL.

It trains a small scikit-learn model on synthetic orders, creates a compute pool and an image
repository in SQL, logs the model, deploys it as a service (building its environment with uv, or
reusing it), scores a DuckDB table through the service function, and prints the results and the
throughput. Everything lives in a temporary account directory that is removed at the end.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

import duckserve
from duckserve.registry import Registry
from duckserve.sql.cli import format_table

ROWS = 200_000


def show(conn: duckserve.Connection, sql: str) -> None:
    print(f"\n> {' '.join(sql.split())}")
    cursor = conn.cursor().execute(sql)
    print(format_table(cursor.fetch_arrow_table()))


def synthetic_orders(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "BASKET": rng.gamma(2.0, 30.0, n).round(2),
        "ITEMS": rng.integers(1, 12, n).astype(float),
        "DAYS_SINCE_LAST": rng.exponential(20.0, n).round(1),
        "DISCOUNT": rng.uniform(0, 0.3, n).round(3),
    })


def main() -> None:
    train = synthetic_orders(20_000, seed=1)
    churn = (train["DAYS_SINCE_LAST"] / 30 - train["DISCOUNT"] * 3 + np.random.default_rng(2).normal(0, 0.3, len(train))
             > 0.8).astype(int)
    model = HistGradientBoostingClassifier(max_iter=60).fit(train, churn)

    with tempfile.TemporaryDirectory() as home, duckserve.connect(home=home) as conn:
        conn.cursor().execute("""
            CREATE COMPUTE POOL IF NOT EXISTS mypool MIN_NODES = 1 MAX_NODES = 2
              INSTANCE_FAMILY = 'CPU_X64_S' AUTO_RESUME = TRUE;
            CREATE IMAGE REPOSITORY IF NOT EXISTS my_inference_images;
        """)
        reg = Registry(conn)
        mv = reg.log_model(model, model_name="churn_model", version_name="v1", sample_input_data=train.head(100),
                           comment="churn from order behaviour")
        print(f"logged {mv.fully_qualified_model_name} version {mv.version_name}")
        started = time.perf_counter()
        info = mv.create_service(service_name="churn_service", service_compute_pool="mypool",
                                 image_repo="my_inference_images", max_instances=1)
        print(f"service {info['service_name']} is {info['status']} after {time.perf_counter() - started:.1f} s "
              f"(build job {info['build_job']}, image {'built' if info['image_built'] else 'reused'}, "
              f"{info['num_workers']} workers)")

        orders = synthetic_orders(ROWS, seed=3)
        orders.insert(0, "ORDER_ID", np.arange(ROWS))
        conn.duckdb.register("orders_frame", orders)
        conn.execute("CREATE TABLE orders AS SELECT * FROM orders_frame")

        show(conn, "SHOW FUNCTIONS IN MODEL churn_model VERSION v1")
        show(conn, "SELECT name, status, compute_pool, current_instances, num_workers FROM (SHOW SERVICES)")
        started = time.perf_counter()
        show(conn, """
            SELECT churn_service!predict(basket, items, days_since_last, discount) AS will_churn,
                   count(*) AS orders, round(avg(basket), 2) AS avg_basket
            FROM orders GROUP BY ALL ORDER BY will_churn
        """)
        seconds = time.perf_counter() - started
        print(f"scored {ROWS:,} rows through the service in {seconds:.2f} s ({ROWS / seconds:,.0f} rows/s)")
        show(conn, """
            SELECT order_id, basket, days_since_last,
                   round(churn_service!predict_proba(basket, items, days_since_last, discount).output_feature_1, 3)
                     AS churn_probability
            FROM orders ORDER BY churn_probability DESC, order_id LIMIT 5
        """)
        check = model.predict(orders[train.columns])
        got = conn.execute("SELECT churn_service!predict(basket, items, days_since_last, discount) FROM orders "
                           "ORDER BY order_id").fetch_pandas_all().iloc[:, 0].to_numpy()
        print(f"service answers equal the model's in-process answers: {bool((got == check).all())}")
        conn.execute("DROP SERVICE churn_service")


if __name__ == "__main__":
    main()
