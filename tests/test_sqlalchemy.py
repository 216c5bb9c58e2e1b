"""``duckserve://`` from SQLAlchemy and pandas: engines, Core queries, reflection, transactions,
read_sql/to_sql, duckserve's own statements and a service function."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from duckserve.sql.sqlalchemy_dialect import DuckServeDialect
from tests.deployments import sleepy_service
from tests.pandas_frames import round_trip


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"duckserve:///{tmp_path / 'shop.duckdb'}?home={tmp_path / 'home'}")
    with engine.begin() as conn:
        conn.execute(sa.text("""
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, joined DATE,
                                    score DECIMAL(6, 2) CHECK (score >= 0), tags VARCHAR[]);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (id),
                                 amount DOUBLE);
            CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 10;
        """))
        conn.execute(sa.text("INSERT INTO customers VALUES (1, 'ann', '2024-01-02', 3.5, ['a']), "
                             "(2, 'bob', NULL, 1.25, [])"))
        conn.execute(sa.text("INSERT INTO orders VALUES (10, 1, 12.5), (11, 1, 3.0), (12, 2, 40.0)"))
    yield engine
    engine.dispose()


def test_url_and_dialect(tmp_path: Path) -> None:
    url = sa.make_url(f"duckserve://ANALYST@/{tmp_path}/x.duckdb?home=/h&role=R&warehouse=W&threads=2")
    assert isinstance(url.get_dialect()(), DuckServeDialect)
    _, options = DuckServeDialect().create_connect_args(url)
    assert options == {"database": f"{tmp_path}/x.duckdb", "home": "/h", "user": "ANALYST", "role": "R",
                       "warehouse": "W", "config": {"threads": "2"}}
    assert DuckServeDialect().create_connect_args(sa.make_url("duckserve://"))[1] == {"database": ":memory:"}


def test_core_queries_and_parameters(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT name FROM customers WHERE id = :id"), {"id": 2}).scalar_one()
        assert got == "bob"
        # duckserve's own statements through SQLAlchemy
        conn.execute(sa.text("CREATE COMPUTE POOL sa_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'"))
        pools = conn.execute(sa.text("SELECT name, state FROM (SHOW COMPUTE POOLS)")).all()
        assert [tuple(p) for p in pools] == [("SA_POOL", "IDLE")]
    orders = sa.Table("orders", sa.MetaData(), autoload_with=engine)
    customers = sa.Table("customers", sa.MetaData(), autoload_with=engine)
    query = (sa.select(customers.c.name, sa.func.sum(orders.c.amount).label("total"))
             .join(orders, orders.c.customer_id == customers.c.id)
             .group_by(customers.c.name).order_by(customers.c.name))
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(query)] == [("ann", 15.5), ("bob", 40.0)]


def test_reflection(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    assert inspector.get_table_names() == ["customers", "orders"]
    assert inspector.get_view_names() == ["big_orders"]
    metadata = sa.MetaData()
    metadata.reflect(engine, views=True)
    assert set(metadata.tables) == {"customers", "orders", "big_orders"}
    customers = metadata.tables["customers"]
    assert [(c.name, type(c.type).__name__, c.nullable) for c in customers.columns] == [
        ("id", "Integer", False), ("name", "String", False), ("joined", "Date", True),
        ("score", "Numeric", True), ("tags", "ARRAY", True)]
    assert customers.c.score.type.precision == 6 and customers.c.score.type.scale == 2
    assert [c.name for c in customers.primary_key.columns] == ["id"]
    (foreign_key,) = metadata.tables["orders"].foreign_keys
    assert foreign_key.target_fullname == "customers.id"
    assert inspector.get_unique_constraints("customers")[0]["column_names"] == ["name"]
    assert "score >= 0" in inspector.get_check_constraints("customers")[0]["sqltext"]
    assert [c["name"] for c in inspector.get_columns("big_orders")] == ["id", "customer_id", "amount"]


def test_transactions(engine: sa.Engine) -> None:
    orders = sa.Table("orders", sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        conn.execute(orders.insert().values(id=13, customer_id=2, amount=1.0))
        conn.rollback()
    with engine.begin() as conn:
        conn.execute(orders.insert(), [{"id": 14, "customer_id": 1, "amount": 2.0},
                                       {"id": 15, "customer_id": 2, "amount": 3.0}])
    with engine.connect() as conn:
        ids = conn.execute(sa.select(orders.c.id).order_by(orders.c.id)).scalars().all()
    assert ids == [10, 11, 12, 14, 15]
    with pytest.raises(sa.exc.ProgrammingError, match="no_such_table"):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table"))


def test_pandas_read_sql_and_to_sql(engine: sa.Engine) -> None:
    frame = pd.read_sql("SELECT id, name, score FROM customers ORDER BY id", engine)
    assert frame["name"].tolist() == ["ann", "bob"] and frame["score"].tolist() == [3.5, 1.25]
    assert pd.read_sql(sa.text("SELECT count(*) AS n FROM big_orders"), engine)["n"].tolist() == [2]
    pd.DataFrame({"k": ["x", "y"], "v": [1.5, 2.5]}).to_sql("uploaded", engine, index=False)
    assert pd.read_sql_table("uploaded", engine).to_dict("records") == [{"k": "x", "v": 1.5}, {"k": "y", "v": 2.5}]
    shown = pd.read_sql("SHOW WAREHOUSES", engine)
    assert "COMPUTE_WH" in shown["name"].tolist()


def test_pandas_round_trip(engine: sa.Engine) -> None:
    round_trip(engine, "frames")


@pytest.mark.xdist_group("services")
def test_service_function_through_sqlalchemy_and_pandas(tmp_path: Path,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    service = sleepy_service(tmp_path_factory)
    engine = sa.create_engine(f"duckserve:///{tmp_path / 'scores.duckdb'}?home={service['home']}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE xs AS SELECT range::DOUBLE AS x FROM range(50)"))
        with engine.connect() as conn:
            doubled = conn.execute(sa.text("SELECT sum(sleepy_svc!predict(x)) FROM xs WHERE x < :n"),
                                   {"n": 10}).scalar_one()
        assert doubled == 2 * sum(range(10))
        frame = pd.read_sql("SELECT x, sleepy_svc!predict(x) AS y FROM xs ORDER BY x", engine)
        assert (frame["y"] == frame["x"] * 2).all() and len(frame) == 50
    finally:
        engine.dispose()
    # a write that calls the service, rolled back: the table is gone and the service still answers
    engine = sa.create_engine(f"duckserve:///{tmp_path / 'scores.duckdb'}?home={service['home']}")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE TABLE ys AS SELECT x, sleepy_svc!predict(x) AS y FROM xs"))
            conn.rollback()
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE zs AS SELECT x, sleepy_svc!predict(x) AS y FROM xs"))
        assert sa.inspect(engine).get_table_names() == ["xs", "zs"]
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT sum(y) FROM zs")).scalar_one() == 2 * sum(range(50))
            assert conn.execute(sa.text("SELECT sleepy_svc!predict(4.0)")).scalar_one() == 8.0
    finally:
        engine.dispose()
