"""Real dbt (dbtRunner, dbt-core's Python entry point) over the ``type: duckserve`` adapter
(dbt-duckserve/): examples/jaffle_shop end to end, with its churn service deployed by a Python
model, its control plane from an on-run-start hook and run-operation macros, an incremental
model's second run, schema tests, docs and a failing model."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import duckserve
from tests import needs

dbt_runner = needs.module("dbt.cli.main", "pip install -e './dbt-duckserve' (make install does)")
needs.module("dbt.adapters.duckserve", "pip install -e ./dbt-duckserve (make install does)")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "jaffle_shop"


class Dbt:
    """Runs dbt commands in the project folder (where profiles.yml's relative path points), keeping
    the log lines dbt emits, as a dbt user reads them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.messages: list[str] = []

    def __call__(self, *args: str) -> Any:
        self.messages = []
        runner = dbt_runner.dbtRunner(callbacks=[lambda event: self.messages.append(event.info.msg)])
        return runner.invoke([*args, "--project-dir", str(self.root), "--profiles-dir", str(self.root),
                              "--no-version-check", "--no-send-anonymous-usage-stats"])

    def log(self) -> str:
        return "\n".join(str(m) for m in self.messages)


def statuses(result: Any) -> dict[str, str]:
    """Each node's status, hooks left out."""
    return {r.node.name: str(r.status) for r in result.result.results if r.node.resource_type != "operation"}


def query(root: Path, home: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = duckserve.connect(str(root / "jaffle_shop.duckdb"), home=str(home))
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


@pytest.mark.xdist_group("services")
def test_jaffle_shop_under_dbt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, home = tmp_path / "jaffle_shop", tmp_path / "home"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("DUCKSERVE_HOME", str(home))
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    dbt = Dbt(root)

    seeded = dbt("seed")
    assert seeded.success, dbt.log()
    assert statuses(seeded) == {"raw_customers": "success", "raw_orders": "success", "raw_payments": "success"}
    # the on-run-start hook made the control plane
    assert "control plane ready: compute pool jaffle_pool, image repository jaffle_images" in dbt.log()
    assert query(root, home, "SELECT name, state FROM (SHOW COMPUTE POOLS)") == [("JAFFLE_POOL", "IDLE")]

    ran = dbt("run")
    assert ran.success, dbt.log()
    assert set(statuses(ran)) == {"churn_service", "stg_customers", "stg_orders", "stg_payments", "customers",
                                  "orders", "customer_churn_scores"}
    assert set(statuses(ran).values()) == {"success"}
    assert query(root, home, "SELECT * FROM churn_service") == [
        ("DUCKSERVE.PUBLIC.CHURN_SVC", "RUNNING", "churn_model", "v1")]
    scores = query(root, home, "SELECT customer_id, number_of_orders, lifetime_value, days_since_last_order, "
                               "churn_probability FROM customer_churn_scores ORDER BY customer_id")
    assert len(scores) == 25

    # the service's answers are the model's: train it again here and compare
    spec = importlib.util.spec_from_file_location("churn_service", root / "models/ml/churn_service.py")
    assert spec is not None and spec.loader is not None
    churn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(churn)
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    X, y = churn.training_data()
    features = pd.DataFrame([r[1:4] for r in scores], columns=churn.FEATURES, dtype="float64")
    expected = LogisticRegression(max_iter=1000).fit(X, y).predict_proba(features)[:, 1].round(4)
    assert [r[4] for r in scores] == pytest.approx(list(expected), abs=1e-4)

    tested = dbt("test")
    assert tested.success, dbt.log()
    assert len(statuses(tested)) == 20 and set(statuses(tested).values()) == {"pass"}
    assert "churn_probabilities_are_probabilities" in statuses(tested)

    # a run-operation macro of the adapter runs one of duckserve's statements and logs its rows
    shown = dbt("run-operation", "duckserve_run", "--args", "{sql: 'SHOW SERVICES'}")
    assert shown.success, dbt.log()
    assert any("CHURN_SVC" in str(m) and "RUNNING" in str(m) for m in dbt.messages), dbt.log()

    # new data, then build only what leads to the scores: seeds, models and their tests; the
    # incremental model scores the two customers with new orders and keeps the other 24 rows
    first_scored_at = query(root, home, "SELECT DISTINCT scored_at FROM customer_churn_scores")
    with open(root / "seeds/raw_customers.csv", "a") as handle:
        handle.write("31,Ada,L.\n")
    with open(root / "seeds/raw_orders.csv", "a") as handle:
        handle.write("81,31,2018-04-25,completed\n82,5,2018-04-28,completed\n")
    with open(root / "seeds/raw_payments.csv", "a") as handle:
        handle.write("96,81,credit_card,2500\n97,82,coupon,700\n")
    built = dbt("build", "--select", "+customer_churn_scores", "--exclude", "churn_service")
    assert built.success, dbt.log()
    kinds = {r.node.resource_type for r in built.result.results}
    assert {"seed", "model", "test"} <= kinds
    assert "orders" not in statuses(built) and "churn_service" not in statuses(built)
    [(first,)] = first_scored_at
    rescored = query(root, home, "SELECT customer_id, scored_at FROM customer_churn_scores ORDER BY customer_id")
    assert sorted(c for c, at in rescored if at != first) == [5, 31]
    assert sorted(c for c, at in rescored if at == first) == sorted(r[0] for r in scores if r[0] != 5)

    documented = dbt("docs", "generate")
    assert documented.success, dbt.log()
    catalog = json.loads((root / "target/catalog.json").read_text())
    columns = catalog["nodes"]["model.jaffle_shop.customer_churn_scores"]["columns"]
    assert {"customer_id", "churn_probability", "likely_to_churn"} <= {c.lower() for c in columns}

    # a failing model: dbt reports DuckDB's error for that model, the others are not touched
    (root / "models/marts/broken_report.sql").write_text(
        "select\n    customer_id,\n    churn_probabilty\nfrom {{ ref('customer_churn_scores') }}\n")
    failed = dbt("run", "--select", "broken_report")
    assert not failed.success
    [result] = [r for r in failed.result.results if r.node.name == "broken_report"]
    assert str(result.status) == "error"
    assert 'Referenced column "churn_probabilty" not found' in result.message
    assert "broken_report" in dbt.log()

    # the profile's user and role are the session's: a role without the grant gets duckserve's
    # denial through dbt, as through any other door, and nothing is created
    with duckserve.connect(home=str(home)) as conn:
        conn.execute("CREATE ROLE reader; CREATE USER analyst DEFAULT_ROLE = reader; GRANT ROLE reader TO USER analyst")
    profiles = (root / "profiles.yml").read_text()
    (root / "profiles.yml").write_text(profiles + "    analyst:\n      type: duckserve\n      path: jaffle_shop.duckdb\n"
                                       f"      home: {home}\n      user: ANALYST\n      role: READER\n")
    denied = dbt("run-operation", "create_control_plane", "--target", "analyst", "--vars", "{compute_pool: other_pool}")
    assert not denied.success
    assert "role READER cannot create compute pool OTHER_POOL: it lacks CREATE COMPUTE POOL on the account" \
        in dbt.log(), dbt.log()
    assert query(root, home, "SELECT count(*) FROM (SHOW COMPUTE POOLS) WHERE name = 'OTHER_POOL'") == [(0,)]

    dropped = dbt("run-operation", "drop_churn_service")
    assert dropped.success, dbt.log()
    assert query(root, home, "SELECT count(*) FROM (SHOW SERVICES) WHERE name = 'CHURN_SVC'") == [(0,)]
