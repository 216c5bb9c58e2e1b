"""Analytics tools over duckserve: SQLAlchemy, pandas and a service function through ``duckserve://``.

Run the jaffle_shop dbt project first, so its database and the CHURN_SVC service exist:

    (cd examples/jaffle_shop && dbt seed && dbt run)
    python examples/sqlalchemy_pandas.py

In Jupyter the same URL works with the SQL magics (jupysql): ``%load_ext sql`` then
``%sql duckserve:///examples/jaffle_shop/jaffle_shop.duckdb`` and ``%sql SELECT ... churn_svc!predict(...)``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

DATABASE = Path(__file__).resolve().parent / "jaffle_shop" / "jaffle_shop.duckdb"


def main() -> int:
    if not DATABASE.exists():
        print(f"{DATABASE} does not exist yet: run `dbt seed && dbt run` in examples/jaffle_shop first", file=sys.stderr)
        return 1
    home = os.environ.get("DUCKSERVE_HOME")
    engine = sa.create_engine(f"duckserve:///{DATABASE}" + (f"?home={home}" if home else ""))

    # reflection: what the project built
    inspector = sa.inspect(engine)
    print("tables:", inspector.get_table_names(), "views:", inspector.get_view_names())
    customers = sa.Table("customers", sa.MetaData(), autoload_with=engine)

    # SQLAlchemy Core
    top = (sa.select(customers.c.first_name, customers.c.customer_lifetime_value)
           .order_by(customers.c.customer_lifetime_value.desc()).limit(3))
    with engine.connect() as conn:
        for name, value in conn.execute(top):
            print(f"{name:>10} {value:8.2f}")

    # pandas, with duckserve's own statements and a service function in the SQL
    print(pd.read_sql("SELECT name, status, functions FROM (SHOW SERVICES) WHERE is_job = 'false'", engine))
    scored = pd.read_sql("""
        SELECT customer_id, number_of_orders,
               churn_svc!predict_proba(number_of_orders::DOUBLE, customer_lifetime_value::DOUBLE,
                                       date_diff('day', most_recent_order, DATE '2018-05-01')::DOUBLE
                                      ).output_feature_1 AS churn_probability
        FROM customers WHERE number_of_orders > 0 ORDER BY churn_probability DESC LIMIT 5
    """, engine)
    print(scored)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
