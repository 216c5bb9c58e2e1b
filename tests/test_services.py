"""End to end: log_model, create_service, SQL service functions, run, suspend/resume, drop.

Real everything: a uv-built environment per model, inference servers as detached process groups on
loopback, DuckDB calling them through the service-function UDF.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import duckserve
from duckserve import errors
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry
from tests.conftest import rows

pytestmark = pytest.mark.xdist_group("services")

SETUP = """
CREATE COMPUTE POOL IF NOT EXISTS mypool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS' AUTO_RESUME = TRUE;
CREATE IMAGE REPOSITORY IF NOT EXISTS my_inference_images;
"""


def training_data(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["F1", "F2", "F3"])
    y = (X["F1"] + 0.5 * X["F2"] - X["F3"] > 0).astype(int).to_numpy()
    return X, y


class Doubler(CustomModel):
    """A custom model with an artifact and two outputs."""

    def __init__(self, context: ModelContext) -> None:
        super().__init__(context)
        with open(self.context.path("factor")) as handle:
            self.factor = float(handle.read())

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"DOUBLED": X["X"] * self.factor, "LABEL": ["n=" + str(v) for v in X["X"]]})


class Slow(CustomModel):
    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        time.sleep(0.05)
        return pd.DataFrame({"Y": X["X"] + 1})


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One home with a deployed LogisticRegression service, shared by the tests of this module."""
    home = tmp_path_factory.mktemp("svc") / "home"
    conn = duckserve.connect(home=str(home))
    conn.cursor().execute(SETUP)
    X, y = training_data()
    model = LogisticRegression().fit(X, y)
    reg = Registry(conn)
    mv = reg.log_model(model, model_name="forecast", version_name="v1", sample_input_data=X.head(20))
    started = time.perf_counter()
    info = mv.create_service(service_name="forecast_svc", service_compute_pool="mypool",
                             image_repo="my_inference_images", max_instances=1)
    first_query_seconds = time.perf_counter() - started
    conn.execute("CREATE TABLE orders AS SELECT range AS id, (random() - 0.5) * 4 AS f1, (random() - 0.5) * 4 AS f2, "
                 "(random() - 0.5) * 4 AS f3 FROM range(5000)")
    yield {"conn": conn, "home": home, "model": model, "mv": mv, "info": info, "reg": reg,
           "deploy_seconds": first_query_seconds}
    # stop every instance this module started, also those a failed test left behind
    for service in rows(conn, "SHOW SERVICES EXCLUDE JOBS"):
        conn.execute(f"DROP SERVICE IF EXISTS {service['name']}")
    conn.close()


def expected(deployed: Any, where: str = "") -> pd.DataFrame:
    frame = deployed["conn"].execute(f"SELECT id, f1, f2, f3 FROM orders {where} ORDER BY id").fetch_pandas_all()
    features = frame[["f1", "f2", "f3"]].set_axis(["F1", "F2", "F3"], axis=1)
    frame["p"] = deployed["model"].predict(features)
    return frame


def test_create_service_reports_what_it_did(deployed: Any) -> None:
    info = deployed["info"]
    assert info["status"] == "RUNNING" and info["build_job"].startswith("MODEL_BUILD_")
    assert info["functions"] == ["predict", "predict_proba", "decision_function"] or "predict" in info["functions"]
    assert info["num_workers"] == 2 * min(1, os.cpu_count() or 1) + 1  # CPU_X64_XS has 1 vCPU


def test_sql_calls_in_several_shapes(deployed: Any) -> None:
    conn = deployed["conn"]
    want = expected(deployed)
    got = conn.execute("SELECT id, forecast_svc!predict(f1, f2, f3) AS p FROM orders ORDER BY id").fetch_pandas_all()
    assert got["p"].tolist() == want["p"].tolist()
    # qualified, any case, in WHERE, CASE, a CTE and a join
    got = rows(conn, """
        WITH scored AS (SELECT id, DUCKSERVE.PUBLIC.FORECAST_SVC!PREDICT(f1, f2, f3) AS p FROM orders)
        SELECT count(*) AS n, sum(CASE WHEN Forecast_Svc!Predict(o.f1, o.f2, o.f3) = 1 THEN 1 ELSE 0 END) AS ones
        FROM scored s JOIN orders o USING (id) WHERE forecast_svc!predict(o.f1, o.f2, o.f3) = s.p
    """)
    assert got == [{"n": 5000, "ones": int(want["p"].sum())}]
    filtered = rows(conn, "SELECT count(*) AS n FROM orders WHERE forecast_svc!predict(f1, f2, f3) = 1 AND id < 100")
    assert filtered == [{"n": int(want[want["id"] < 100]["p"].sum())}]


def test_calls_keep_the_sessions_thread_setting(deployed: Any) -> None:
    """A statement with service calls changes DuckDB's threads for its passes and puts back the
    session's own setting, whatever it is (it must not reset a user's SET threads)."""
    conn = deployed["conn"]
    want = int(expected(deployed)["p"].sum())
    try:
        for threads in (1, 3):
            conn.execute(f"SET threads = {threads}")
            assert rows(conn, "SELECT sum(forecast_svc!predict(f1, f2, f3)) AS n FROM orders") == [{"n": want}]
            assert rows(conn, "SELECT current_setting('threads') AS t") == [{"t": threads}]
    finally:
        conn.execute("RESET threads")


def test_predict_proba_is_a_struct(deployed: Any) -> None:
    conn = deployed["conn"]
    got = conn.execute("SELECT forecast_svc!predict_proba(f1, f2, f3) AS pr FROM orders ORDER BY id LIMIT 10"
                       ).fetchall()
    want = deployed["model"].predict_proba(expected(deployed).head(10)[["f1", "f2", "f3"]].to_numpy())
    for (struct,), probabilities in zip(got, want):
        assert list(struct.values()) == pytest.approx(list(probabilities))
    cols = rows(conn, "SELECT forecast_svc!predict_proba(f1, f2, f3).output_feature_1 AS p1 FROM orders "
                      "ORDER BY id LIMIT 3")
    assert [c["p1"] for c in cols] == pytest.approx(list(want[:3, 1]))


def test_nulls_and_empty_tables(deployed: Any) -> None:
    conn = deployed["conn"]
    got = conn.execute("SELECT forecast_svc!predict(f1, NULL, f3) AS p FROM orders LIMIT 3").fetchall()
    assert got == [(None,), (None,), (None,)]
    got = conn.execute("SELECT id, forecast_svc!predict(CASE WHEN id % 2 = 0 THEN NULL ELSE f1 END, f2, f3) AS p "
                       "FROM orders WHERE id < 6 ORDER BY id").fetchall()
    want = expected(deployed, "WHERE id < 6")["p"].tolist()
    assert [p for _, p in got] == [None, want[1], None, want[3], None, want[5]]
    assert conn.execute("SELECT forecast_svc!predict(f1, f2, f3) FROM orders WHERE id < 0").fetchall() == []


def test_errors_name_the_service_and_the_fix(deployed: Any) -> None:
    conn = deployed["conn"]
    with pytest.raises(errors.ProgrammingError, match=r"FORECAST_SVC!PREDICT takes 3 argument\(s\)"):
        conn.execute("SELECT forecast_svc!predict(f1, f2) FROM orders")
    with pytest.raises(errors.ObjectNotFound, match="has no function EXPLAIN"):
        conn.execute("SELECT forecast_svc!explain(f1, f2, f3) FROM orders")
    with pytest.raises(errors.ObjectNotFound, match="did you mean DUCKSERVE.PUBLIC.FORECAST_SVC"):
        conn.execute("SELECT forcast_svc!predict(f1, f2, f3) FROM orders")
    # strings, comments and != are left alone by the rewrite
    assert conn.execute("SELECT 'svc!predict(' AS s, 1 != 2 AS ne -- x!y(\n").fetchall() == [("svc!predict(", True)]


def test_run_through_the_service(deployed: Any) -> None:
    mv = deployed["mv"]
    X, _ = training_data(300, seed=3)
    out = mv.run(X, function_name="predict", service_name="forecast_svc")
    assert list(out.columns) == ["F1", "F2", "F3", "output_feature_0"]
    assert out["output_feature_0"].tolist() == deployed["model"].predict(X).tolist()
    proba = mv.run(X, function_name="predict_proba", service_name="forecast_svc")
    assert np.allclose(proba[["output_feature_0", "output_feature_1"]].to_numpy(), deployed["model"].predict_proba(X))


def test_show_describe_status_and_logs(deployed: Any) -> None:
    conn = deployed["conn"]
    services = rows(conn, "SHOW SERVICES IN COMPUTE POOL mypool")
    by_name = {s["name"]: s for s in services}
    assert by_name["FORECAST_SVC"]["status"] == "RUNNING"
    job = deployed["info"]["build_job"]
    assert by_name[job]["is_job"] == "true" and by_name[job]["status"] == "DONE"
    assert rows(conn, "SELECT status FROM (DESCRIBE SERVICE forecast_svc)") == [{"status": "RUNNING"}]
    containers = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE forecast_svc")
    assert [(c["instance_id"], c["status"]) for c in containers] == [("0", "READY")]
    endpoint = rows(conn, "SHOW ENDPOINTS IN SERVICE forecast_svc")[0]
    assert (endpoint["name"], endpoint["port"], endpoint["ingress_url"]) == ("inference", 5000, None)
    status = conn.execute("CALL SYSTEM$GET_SERVICE_STATUS('forecast_svc')").fetchone()[0]
    assert '"status": "READY"' in status
    build_log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{job}', 0, 'model-build')").fetchone()[0]
    assert "scikit-learn" in build_log
    inference_log = conn.execute("CALL SYSTEM$GET_SERVICE_LOGS('FORECAST_SVC', 0, 'model-inference', 50)"
                                 ).fetchone()[0]
    assert "predict" in inference_log
    functions = rows(conn, "SHOW FUNCTIONS IN MODEL forecast VERSION v1")
    predict = next(f for f in functions if f["name"] == "PREDICT")
    assert predict["arguments"] == "PREDICT(F1 DOUBLE, F2 DOUBLE, F3 DOUBLE) RETURN BIGINT"
    assert rows(conn, "SELECT name, services FROM (SHOW VERSIONS IN MODEL forecast)") == [
        {"name": "V1", "services": "DUCKSERVE.PUBLIC.FORECAST_SVC"}]
    listed = deployed["mv"].list_services()
    assert listed["name"].tolist() == ["FORECAST_SVC"]


def test_model_in_use_cannot_be_dropped(deployed: Any) -> None:
    with pytest.raises(errors.IntegrityError, match="used by service DUCKSERVE.PUBLIC.FORECAST_SVC"):
        deployed["conn"].execute("DROP MODEL forecast")
    with pytest.raises(errors.IntegrityError):
        deployed["reg"].delete_model("forecast")


def test_suspend_and_resume(deployed: Any) -> None:
    conn = deployed["conn"]
    conn.execute("ALTER SERVICE forecast_svc SUSPEND")
    assert rows(conn, "SELECT status FROM (SHOW SERVICES LIKE 'FORECAST_SVC')") == [{"status": "SUSPENDED"}]
    # AUTO_RESUME is on: the next call resumes the service
    assert conn.execute("SELECT count(forecast_svc!predict(f1, f2, f3)) FROM orders").fetchone() == (5000,)
    assert rows(conn, "SELECT status FROM (SHOW SERVICES LIKE 'FORECAST_SVC')") == [{"status": "RUNNING"}]
    conn.execute("ALTER SERVICE forecast_svc SET AUTO_RESUME = FALSE")
    conn.execute("ALTER SERVICE forecast_svc SUSPEND")
    with pytest.raises(errors.OperationalError, match="SUSPENDED and AUTO_RESUME is off: run ALTER SERVICE"):
        conn.execute("SELECT forecast_svc!predict(f1, f2, f3) FROM orders")
    conn.execute("ALTER SERVICE forecast_svc RESUME")
    conn.execute("ALTER SERVICE forecast_svc SET AUTO_RESUME = TRUE")
    assert conn.execute("SELECT count(forecast_svc!predict(f1, f2, f3)) FROM orders").fetchone() == (5000,)


def test_second_process_uses_the_service(deployed: Any) -> None:
    script = textwrap.dedent(f"""
        import duckserve
        conn = duckserve.connect(home={str(deployed['home'])!r})
        conn.execute("CREATE TABLE t AS SELECT 1.0 AS a, -2.0 AS b, 0.5 AS c")
        print(conn.execute("SELECT forecast_svc!predict(a, b, c) FROM t").fetchone()[0])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    want = deployed["model"].predict(pd.DataFrame({"F1": [1.0], "F2": [-2.0], "F3": [0.5]}))[0]
    assert done.stdout.strip() == str(want)


def test_same_environment_builds_nothing(deployed: Any) -> None:
    reg, conn = deployed["reg"], deployed["conn"]
    X, y = training_data(200, seed=5)
    mv2 = reg.log_model(LogisticRegression(C=0.5).fit(X, y), model_name="forecast2", sample_input_data=X)
    info = mv2.create_service(service_name="forecast_svc2", service_compute_pool="mypool",
                              image_repo="my_inference_images")
    assert info["image_built"] is False
    log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{info['build_job']}', 0, 'model-build')").fetchone()[0]
    assert "build skipped" in log
    # create_service is idempotent: a second call changes nothing and builds nothing
    again = mv2.create_service(service_name="forecast_svc2", service_compute_pool="mypool",
                               image_repo="my_inference_images")
    assert again["image_built"] is False and again["status"] == "RUNNING"
    images = rows(conn, "SHOW IMAGES IN IMAGE REPOSITORY my_inference_images")
    assert len({i["digest"] for i in images}) == 1
    mv2.delete_service("forecast_svc2")
    assert rows(conn, "SHOW SERVICES LIKE 'FORECAST_SVC2'") == []


def test_custom_model_with_several_outputs(deployed: Any, tmp_path: Path) -> None:
    conn, reg = deployed["conn"], deployed["reg"]
    factor = tmp_path / "factor.txt"
    factor.write_text("2.5")
    model = Doubler(ModelContext(artifacts={"factor": str(factor)}))
    sample = pd.DataFrame({"X": [1.0, 2.0, 3.0]})
    mv = reg.log_model(model, model_name="doubler", version_name="v1", sample_input_data=sample)
    mv.create_service(service_name="doubler_svc", service_compute_pool="mypool", image_repo="my_inference_images")
    got = rows(conn, "SELECT doubler_svc!predict(range::DOUBLE) AS r FROM range(3)")
    assert got == [{"r": {"DOUBLED": 0.0, "LABEL": "n=0.0"}}, {"r": {"DOUBLED": 2.5, "LABEL": "n=1.0"}},
                   {"r": {"DOUBLED": 5.0, "LABEL": "n=2.0"}}]
    conn.execute("DROP SERVICE doubler_svc")


def test_overload_is_retried_and_completes(deployed: Any) -> None:
    conn, reg = deployed["conn"], deployed["reg"]
    mv = reg.log_model(Slow(ModelContext()), model_name="slow", sample_input_data=pd.DataFrame({"X": [1.0]}))
    mv.create_service(service_name="slow_svc", service_compute_pool="mypool", image_repo="my_inference_images",
                      num_workers=1, max_batch_rows=50, max_queue=1)
    conn.execute("CREATE OR REPLACE WAREHOUSE busy WAREHOUSE_SIZE = 'MEDIUM'")  # 8 batches in flight
    try:
        got = conn.execute("SELECT sum(slow_svc!predict(range::DOUBLE)) FROM range(2000)").fetchone()[0]
        assert got == sum(range(2000)) + 2000
        log = conn.execute("CALL SYSTEM$GET_SERVICE_LOGS('slow_svc', 0, 'model-inference')").fetchone()[0]
        assert " 429" in log or "429 " in log or "overload" in log.lower()
    finally:
        conn.execute("USE WAREHOUSE compute_wh")
        conn.execute("DROP WAREHOUSE busy")
        conn.execute("DROP SERVICE slow_svc")


def test_killed_instance_mid_query(deployed: Any) -> None:
    conn, reg = deployed["conn"], deployed["reg"]
    mv = reg.log_model(Slow(ModelContext()), model_name="slow2", sample_input_data=pd.DataFrame({"X": [1.0]}))
    mv.create_service(service_name="two_svc", service_compute_pool="mypool", image_repo="my_inference_images",
                      max_instances=2, num_workers=1, max_batch_rows=100)
    containers = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE two_svc")
    assert len(containers) == 2
    victim = containers[0]["pid"]

    def kill_soon() -> None:
        time.sleep(0.5)
        os.killpg(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    try:
        got = conn.execute("SELECT count(*), sum(two_svc!predict(range::DOUBLE)) FROM range(3000)").fetchone()
        assert got == (3000, sum(range(3000)) + 3000)  # the other instance answered every row
    except errors.ServiceError as exc:  # or a clear error, never wrong rows
        assert "TWO_SVC" in str(exc)
    killer.join()
    conn.execute("DROP SERVICE two_svc")


def test_deploy_time_is_reported(deployed: Any) -> None:
    # not a timed assertion: the figure goes to the bench notes; here only that it was measured
    assert deployed["deploy_seconds"] > 0


def test_idle_service_suspends_itself_and_resumes_on_call(deployed: Any) -> None:
    conn, reg = deployed["conn"], deployed["reg"]
    mv = reg.get_model("forecast").version("v1")
    mv.create_service(service_name="idle_svc", service_compute_pool="mypool", image_repo="my_inference_images",
                      auto_suspend_secs=2, num_workers=1)
    assert conn.execute("SELECT count(idle_svc!predict(f1, f2, f3)) FROM orders").fetchone() == (5000,)
    deadline = time.monotonic() + 30
    status = ""
    while time.monotonic() < deadline:
        status = rows(conn, "SELECT status FROM (SHOW SERVICES LIKE 'IDLE_SVC')")[0]["status"]
        if status == "SUSPENDED":
            break
        time.sleep(0.5)
    assert status == "SUSPENDED"
    assert conn.execute("SELECT count(idle_svc!predict(f1, f2, f3)) FROM orders").fetchone() == (5000,)
    assert rows(conn, "SELECT status FROM (SHOW SERVICES LIKE 'IDLE_SVC')") == [{"status": "RUNNING"}]
    conn.execute("DROP SERVICE idle_svc")


def test_service_roles_and_owners(deployed: Any) -> None:
    conn, home = deployed["conn"], deployed["home"]
    conn.cursor().execute("""
        CREATE ROLE IF NOT EXISTS analyst;
        CREATE USER IF NOT EXISTS ana DEFAULT_ROLE = analyst;
        GRANT ROLE analyst TO USER ana;
        GRANT USAGE ON COMPUTE POOL mypool TO ROLE analyst;
        GRANT READ, WRITE, SERVICE READ, SERVICE WRITE ON IMAGE REPOSITORY my_inference_images TO ROLE analyst;
    """)
    with duckserve.connect(home=str(home), user="ana") as ana:
        ana.execute("CREATE TABLE t AS SELECT 1.0 AS a, 2.0 AS b, 3.0 AS c")
        with pytest.raises(errors.InsufficientPrivileges, match=r"GRANT SERVICE ROLE DUCKSERVE.PUBLIC.FORECAST_SVC!"
                                                                 r"INFERENCE_SERVICE_FUNCTION_USAGE TO ROLE ANALYST"):
            ana.execute("SELECT forecast_svc!predict(a, b, c) FROM t")
        conn.execute("GRANT SERVICE ROLE forecast_svc!INFERENCE_SERVICE_FUNCTION_USAGE TO ROLE analyst")
        assert ana.execute("SELECT forecast_svc!predict(a, b, c) FROM t").fetchone()[0] in (0, 1)
    with duckserve.connect(home=str(home), user="ana") as ana:
        with pytest.raises(errors.InsufficientPrivileges):
            Registry(ana).get_model("forecast")
    conn.execute("GRANT USAGE ON MODEL forecast TO ROLE analyst")
    with duckserve.connect(home=str(home), user="ana") as ana:
        mv = Registry(ana).get_model("forecast").version("v1")
        with pytest.raises(errors.ProgrammingError, match="only the owner of model DUCKSERVE.PUBLIC.FORECAST"):
            mv.create_service(service_name="not_mine", service_compute_pool="mypool",
                              image_repo="my_inference_images")
    assert rows(conn, "SHOW SERVICES LIKE 'NOT_MINE'") == []


def test_ingress_with_programmatic_access_tokens(deployed: Any) -> None:
    import httpx

    conn, mv = deployed["conn"], deployed["mv"]
    mv.create_service(service_name="public_svc", service_compute_pool="mypool", image_repo="my_inference_images",
                      ingress_enabled=True, num_workers=1)
    url = rows(conn, "SHOW ENDPOINTS IN SERVICE public_svc")[0]["ingress_url"]
    assert url.startswith("127.0.0.1:")
    secret = rows(conn, "ALTER USER admin ADD PROGRAMMATIC ACCESS TOKEN ingress_test DAYS_TO_EXPIRY = 1")[0][
        "token_secret"]
    X, _ = training_data(5, seed=9)
    body = {"data": [[i, *row] for i, row in enumerate(X.to_numpy().tolist())]}
    response = httpx.post(f"http://{url}/predict", json=body, timeout=30)
    assert response.status_code == 401
    response = httpx.post(f"http://{url}/predict", json=body, timeout=30,
                          headers={"Authorization": f'Snowflake Token="{secret}"'})
    assert response.status_code == 200, response.text
    assert [r[1] for r in response.json()["data"]] == deployed["model"].predict(X).tolist()
    conn.cursor().execute("""
        CREATE ROLE IF NOT EXISTS caller;
        CREATE USER IF NOT EXISTS app DEFAULT_ROLE = caller;
        GRANT ROLE caller TO USER app;
    """)
    app_secret = rows(conn, "ALTER USER app ADD PROGRAMMATIC ACCESS TOKEN t1")[0]["token_secret"]
    headers = {"Authorization": f"Bearer {app_secret}"}
    assert httpx.post(f"http://{url}/predict-proba", json=body, headers=headers, timeout=30).status_code == 403
    conn.execute("GRANT SERVICE ROLE public_svc!ALL_ENDPOINTS_USAGE TO ROLE caller")
    time.sleep(1.2)  # the ingress caches authorization decisions for a second
    response = httpx.post(f"http://{url}/predict-proba", json=body, headers=headers, timeout=30)
    assert response.status_code == 200 and len(response.json()["data"]) == 5
    conn.execute("ALTER USER app REMOVE PROGRAMMATIC ACCESS TOKEN t1")
    time.sleep(1.2)
    assert httpx.post(f"http://{url}/predict", json=body, headers=headers, timeout=30).status_code == 401
    # services with ingress never suspend themselves
    assert rows(conn, "SELECT auto_suspend_secs FROM (SHOW SERVICES LIKE 'PUBLIC_SVC')") == [{"auto_suspend_secs": 0}]
    conn.execute("DROP SERVICE public_svc")


def test_pool_operations_reach_services(deployed: Any) -> None:
    conn, mv = deployed["conn"], deployed["mv"]
    conn.execute("CREATE COMPUTE POOL side_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS "
                 "AUTO_RESUME = FALSE")
    mv.create_service(service_name="side_svc", service_compute_pool="side_pool", image_repo="my_inference_images",
                      num_workers=1)
    with pytest.raises(errors.ProgrammingError, match="STOP ALL"):
        conn.execute("DROP COMPUTE POOL side_pool")
    conn.execute("ALTER COMPUTE POOL side_pool SUSPEND")
    assert rows(conn, "SELECT status FROM (SHOW SERVICES LIKE 'SIDE_SVC')") == [{"status": "SUSPENDED"}]
    with pytest.raises(errors.OperationalError, match="compute pool SIDE_POOL is SUSPENDED and AUTO_RESUME is off"):
        conn.execute("SELECT side_svc!predict(f1, f2, f3) FROM orders")
    conn.execute("ALTER COMPUTE POOL side_pool RESUME")
    assert conn.execute("SELECT count(side_svc!predict(f1, f2, f3)) FROM orders").fetchone() == (5000,)
    conn.execute("ALTER COMPUTE POOL side_pool STOP ALL")
    assert rows(conn, "SHOW SERVICES LIKE 'SIDE_SVC'") == []
    conn.execute("DROP COMPUTE POOL side_pool")


def test_unresolvable_dependency_fails_the_build(deployed: Any) -> None:
    conn, reg = deployed["conn"], deployed["reg"]
    X, y = training_data(100, seed=11)
    mv = reg.log_model(LogisticRegression().fit(X, y), model_name="broken", sample_input_data=X,
                       pip_requirements=["duckserve-no-such-package-zzz"])
    with pytest.raises(errors.BuildError, match="duckserve-no-such-package-zzz") as info:
        mv.create_service(service_name="broken_svc", service_compute_pool="mypool", image_repo="my_inference_images")
    job = str(info.value).split("SYSTEM$GET_SERVICE_LOGS('")[1].split("'")[0]
    assert rows(conn, "SHOW SERVICES LIKE 'BROKEN_SVC'") == []  # nothing half-created
    log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{job}', 0, 'model-build')").fetchone()[0]
    assert "duckserve-no-such-package-zzz" in log
    assert rows(conn, f"SELECT status FROM (SHOW SERVICES LIKE '{job}')") == [{"status": "FAILED"}]


def test_writing_statements_and_volatile_arguments(deployed: Any) -> None:
    conn = deployed["conn"]
    want = expected(deployed)
    # the first pass of a writing statement is rolled back: one table, each row once
    conn.execute("CREATE OR REPLACE TABLE scored AS SELECT id, forecast_svc!predict(f1, f2, f3) AS p FROM orders")
    got = conn.execute("SELECT p FROM scored ORDER BY id").fetch_pandas_all()["p"].tolist()
    assert got == want["p"].tolist()
    cursor = conn.execute("INSERT INTO scored SELECT id, forecast_svc!predict(f1, f2, f3) FROM orders WHERE id < 10")
    assert cursor.rowcount == 10
    assert conn.execute("SELECT count(*) FROM scored").fetchone() == (5010,)
    conn.execute("BEGIN TRANSACTION")  # inside the user's own transaction there is no first pass
    conn.execute("DELETE FROM scored WHERE forecast_svc!predict(0.0, 0.0, 0.0) = p AND id >= 0")
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM scored").fetchone() == (5010,)
    # a rollback drops the UDFs DuckDB registered since BEGIN; the next call registers them again
    conn.execute("BEGIN TRANSACTION")
    conn.execute("SELECT forecast_svc!decision_function(f1, f2, f3) FROM orders LIMIT 1")
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(forecast_svc!decision_function(f1, f2, f3)) FROM orders").fetchone() == (5000,)
    # arguments that differ between passes (random()) are sent again: answers match their own rows
    frame = conn.execute("SELECT a, f2, f3, forecast_svc!predict(a, f2, f3) AS p FROM "
                         "(SELECT random() * 4 - 2 AS a, f2, f3 FROM orders)").fetch_pandas_all()
    features = frame[["a", "f2", "f3"]].set_axis(["F1", "F2", "F3"], axis=1)
    assert frame["p"].tolist() == deployed["model"].predict(features).tolist()
    # LIMIT stops early; the answers are still right
    top = conn.execute("SELECT id, forecast_svc!predict(f1, f2, f3) FROM orders ORDER BY id LIMIT 7").fetchall()
    assert [p for _, p in top] == want["p"].tolist()[:7]
