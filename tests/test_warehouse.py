"""The warehouse path and every model kind in process: eligibility at log time, SHOW VERSIONS,
``MODEL(m, v)!method(...)`` in SQL, ``mv.run`` without a service, errors naming function, argument and
type, nullable pandas dtypes, signatures, MLflow directories and CREATE MODEL ... FROM 'path'.

No service is started here: the end-to-end service tests are in test_model_kinds.py.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import duckserve
from duckserve import errors
from duckserve.engine.warehouse import eligibility
from duckserve.model_signature import DataType, FeatureSpec, ModelSignature, from_duckdb_type
from duckserve.registry import Registry
from tests import model_kinds as K
from tests.conftest import rows

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture
def reg(conn: Any) -> Registry:
    conn.execute("CREATE TABLE feats AS SELECT range AS id, (range % 7 - 3) / 2.0 AS f1, "
                 "(range % 5 - 2) / 3.0 AS f2, (range % 3 - 1)::DOUBLE AS f3 FROM range(200)")
    return Registry(conn)


def feats(conn: Any) -> pd.DataFrame:
    frame = conn.execute("SELECT f1, f2, f3 FROM feats ORDER BY id").fetch_pandas_all()
    return frame.set_axis(["F1", "F2", "F3"], axis=1)


# --- eligibility ------------------------------------------------------------------------------------


def test_eligibility_follows_the_seeds_rules() -> None:
    import sklearn

    ok = eligibility([f"scikit-learn=={sklearn.__version__}", "numpy", "pandas>=2"], [], [], PY)
    assert ok.runnable_in == ["WAREHOUSE", "SPCS"] and ok.reasons == []
    pip = eligibility([], ["scikit-learn"], [], PY)
    assert pip.runnable_in == ["SPCS"] and "PyPI requirements (scikit-learn)" in pip.reason
    channel = eligibility(["conda-forge::scikit-learn"], [], [], PY)
    assert channel.runnable_in == ["SPCS"] and "explicit channel" in channel.reason
    missing = eligibility(["duckserve-no-such-package"], [], [], PY)
    assert "'duckserve-no-such-package' is not installed in this session's Python" in missing.reason
    old = eligibility(["scikit-learn<1.0"], [], [], PY)
    assert f"needs scikit-learn<1.0, but the warehouse has scikit-learn {sklearn.__version__}" in old.reason
    conda_only = eligibility(["mkl"], [], [], PY)
    assert "'mkl' has no Python package the warehouse could provide" in conda_only.reason
    python = eligibility([], [], [], "3.9" if PY != "3.9" else "3.10")
    assert "the warehouse runs Python" in python.reason
    # a model kind's own pip requirements (an MLflow model's) are checked, not refused
    recorded = eligibility([], [], ["mlflow-skinny", f"scikit-learn=={sklearn.__version__}"], PY)
    assert recorded.in_warehouse
    assert not eligibility([], [], ["duckserve-no-such-package==1.0"], PY).in_warehouse


def test_show_versions_says_where_each_version_runs(reg: Registry, conn: Any) -> None:
    X, _, label = K.tabular()
    model = LogisticRegression().fit(X, label)
    reg.log_model(model, model_name="clf", version_name="v1", sample_input_data=X)
    reg.log_model(model, model_name="clf", version_name="v2", sample_input_data=X, pip_requirements=["scikit-learn"])
    reg.log_model(model, model_name="clf", version_name="v3", sample_input_data=X,
                  conda_dependencies=["conda-forge::scikit-learn"])
    reg.log_model(model, model_name="clf", version_name="v4", sample_input_data=X,
                  conda_dependencies=["scikit-learn<1.0"])
    got = {r["name"]: r for r in rows(conn, "SHOW VERSIONS IN MODEL clf")}
    assert got["V1"]["runnable_in"] == "WAREHOUSE,SPCS" and got["V1"]["warehouse_reason"] is None
    assert [got[v]["runnable_in"] for v in ("V2", "V3", "V4")] == ["SPCS", "SPCS", "SPCS"]
    assert "PyPI" in got["V2"]["warehouse_reason"] and "channel" in got["V3"]["warehouse_reason"]
    assert "scikit-learn<1.0" in got["V4"]["warehouse_reason"]
    # the user's own name for the framework replaces the default pin: no duplicate, no conflict warning
    assert json.loads(got["V2"]["dependencies"]) == {"conda": [], "pip": ["scikit-learn"]}


# --- MODEL(m, v)!method(...) and mv.run ---------------------------------------------------------------


def test_model_calls_in_sql_match_the_model(reg: Registry, conn: Any) -> None:
    X, _, label = K.tabular()
    model = LogisticRegression().fit(X, label)
    reg.log_model(model, model_name="clf", version_name="v1", sample_input_data=X)
    want = model.predict(feats(conn))
    got = conn.execute("SELECT MODEL(clf, v1)!predict(f1, f2, f3) FROM feats ORDER BY id").fetchall()
    assert [g for (g,) in got] == want.tolist()
    # default version, qualified name, any case, inside WHERE and a CTE, a STRUCT for several outputs
    count = conn.execute("""
        WITH s AS (SELECT id, model(DUCKSERVE.PUBLIC.Clf)!PREDICT(f1, f2, f3) AS p FROM feats)
        SELECT count(*) FROM s WHERE p = 1 AND MODEL(clf, "V1")!predict(0.5, 0.5, 0.5) IN (0, 1)
    """).fetchone()[0]
    assert count == int(want.sum())
    proba = conn.execute("SELECT MODEL(clf, v1)!predict_proba(f1, f2, f3).output_feature_1 FROM feats "
                         "ORDER BY id LIMIT 5").fetchall()
    assert [p for (p,) in proba] == pytest.approx(model.predict_proba(feats(conn).head(5))[:, 1].tolist())
    # strict: a NULL argument answers NULL without reaching the model
    assert conn.execute("SELECT MODEL(clf, v1)!predict(NULL, f2, f3) FROM feats LIMIT 2").fetchall() == [
        (None,), (None,)]
    # strings, comments and != stay untouched by the rewrite
    assert conn.execute("SELECT 'MODEL(a, b)!c(' AS s, 1 != 2 -- MODEL(x)!y(\n").fetchall() == [
        ("MODEL(a, b)!c(", True)]


def test_run_without_a_service_runs_in_the_warehouse(reg: Registry) -> None:
    X, _, label = K.tabular()
    model = LogisticRegression().fit(X, label)
    mv = reg.log_model(model, model_name="clf", version_name="v1", sample_input_data=X)
    out = mv.run(X, function_name="predict_proba")
    assert np.allclose(out[["output_feature_0", "output_feature_1"]].to_numpy(), model.predict_proba(X))
    assert list(out.columns[:3]) == ["F1", "F2", "F3"]
    arrays = mv.run(X.to_numpy()[:5], function_name="predict")  # arrays and lists too
    assert arrays["output_feature_0"].tolist() == model.predict(X.head(5)).tolist()


def test_ineligible_versions_say_why_and_point_at_create_service(reg: Registry, conn: Any) -> None:
    X, _, label = K.tabular()
    mv = reg.log_model(LogisticRegression().fit(X, label), model_name="clf", version_name="pip",
                       sample_input_data=X, pip_requirements=["scikit-learn"])
    with pytest.raises(errors.ProgrammingError, match=r"version PIP cannot run in the warehouse: it has PyPI "
                                                      r"requirements \(scikit-learn\).*create_service"):
        mv.run(X, function_name="predict")
    with pytest.raises(errors.ProgrammingError, match="cannot run in the warehouse.*mv.create_service"):
        conn.execute("SELECT MODEL(clf, pip)!predict(f1, f2, f3) FROM feats")


def test_arity_and_types_fail_before_any_row_is_sent(reg: Registry, conn: Any) -> None:
    X, _, label = K.tabular()
    mv = reg.log_model(LogisticRegression().fit(X, label), model_name="clf", version_name="v1", sample_input_data=X)
    conn.execute("CREATE TABLE words AS SELECT 'x' AS w, 1.0 AS d, [1.0, 2.0] AS l")
    with pytest.raises(errors.ProgrammingError, match=r"MODEL\(DUCKSERVE.PUBLIC.CLF, V1\)!PREDICT takes 3 "
                                                      r"argument\(s\) \(F1 DOUBLE, F2 DOUBLE, F3 DOUBLE\), got 2"):
        conn.execute("SELECT MODEL(clf, v1)!predict(d, d) FROM words")
    with pytest.raises(errors.ProgrammingError,
                       match=r"MODEL\(DUCKSERVE.PUBLIC.CLF, V1\)!PREDICT: argument 2 \(F2\) expects DOUBLE, got VARCHAR"):
        conn.execute("SELECT MODEL(clf, v1)!predict(d, w, d) FROM words")
    with pytest.raises(errors.ProgrammingError, match=r"argument 3 \(F3\) expects DOUBLE, got DECIMAL\(2,1\)\[\]"):
        conn.execute("SELECT MODEL(clf, v1)!predict(d, d, l) FROM words")
    with pytest.raises(errors.ObjectNotFound, match="has no function EXPLAIN: it has PREDICT"):
        conn.execute("SELECT MODEL(clf, v1)!explain(d, d, d) FROM words")
    with pytest.raises(errors.ObjectNotFound, match="has no version V9"):
        conn.execute("SELECT MODEL(clf, v9)!predict(d, d, d) FROM words")
    bad = X.head(3).copy()
    bad["F2"] = pd.Series([0.1, "oops", 0.3], dtype=object)
    with pytest.raises(errors.ProgrammingError, match=r"DUCKSERVE.PUBLIC.CLF!PREDICT: argument F2 \(position 2\) "
                                                      r"expects DOUBLE, got 'oops' \(str\) in row 1"):
        mv.run(bad, function_name="predict")


def test_nullable_pandas_dtypes_are_accepted(reg: Registry) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, _, label = K.tabular()
    sample = pd.DataFrame({"N": pd.array(np.arange(len(X)) % 5, dtype="Int64"), "F": pd.array(X["F1"], dtype="Float64"),
                           "B": pd.array(X["F2"] > 0, dtype="boolean")})
    model = HistGradientBoostingClassifier(max_iter=5).fit(sample.astype(float), label)
    mv = reg.log_model(model, model_name="nullable", sample_input_data=sample)
    (predict,) = [f for f in mv.show_functions() if f["name"] == "PREDICT"]
    assert predict["arguments"] == "N BIGINT, F DOUBLE, B BOOLEAN"
    data = sample.head(4).copy()
    data.loc[1, "N"], data.loc[2, "F"], data.loc[3, "B"] = pd.NA, pd.NA, pd.NA
    out = mv.run(data, function_name="predict")
    assert out["output_feature_0"].tolist()[0] == model.predict(sample.head(1).astype(float))[0]
    assert out["output_feature_0"].isna().tolist() == [False, True, True, True]  # missing in, missing out


# --- every kind, in process ----------------------------------------------------------------------------


def test_xgboost_and_lightgbm_in_the_warehouse(reg: Registry, conn: Any) -> None:
    import xgboost

    X = feats(conn)
    regressor, booster, classifier = K.xgb_regressor(), K.xgb_booster(), K.lgbm_classifier()
    for name, model in (("xgb", regressor), ("booster", booster), ("lgbm", classifier)):
        mv = reg.log_model(model, model_name=name, sample_input_data=K.tabular()[0])
        assert rows(conn, f"SELECT runnable_in FROM (SHOW VERSIONS IN MODEL {name})") == [
            {"runnable_in": "WAREHOUSE,SPCS"}]
        assert mv.show_functions()[0]["name"] == "PREDICT"
    got = conn.execute("SELECT MODEL(xgb)!predict(f1, f2, f3), MODEL(booster)!predict(f1, f2, f3), "
                       "MODEL(lgbm)!predict_proba(f1, f2, f3).output_feature_1 FROM feats ORDER BY id").fetchall()
    got_array = np.array(got, dtype=float)
    assert np.allclose(got_array[:, 0], regressor.predict(X), atol=1e-6)
    assert np.allclose(got_array[:, 1], booster.predict(xgboost.DMatrix(X)), atol=1e-6)
    assert np.allclose(got_array[:, 2], classifier.predict_proba(X)[:, 1], atol=1e-9)
    deps = json.loads(rows(conn, "SELECT dependencies FROM (SHOW VERSIONS IN MODEL xgb)")[0]["dependencies"])
    assert deps["conda"][0] == f"xgboost=={xgboost.__version__}"  # the builder picks xgboost-cpu on CPU


def test_pytorch_and_torchscript_in_the_warehouse(reg: Registry, conn: Any) -> None:
    import torch

    X = feats(conn)
    net = K.torch_net()
    mv = reg.log_model(net, model_name="net", sample_input_data=K.tabular()[0])
    (forward,) = mv.show_functions()
    assert forward["arguments"] == "F1 DOUBLE, F2 DOUBLE, F3 DOUBLE" and forward["return_type"] == "FLOAT"
    with torch.inference_mode():
        want = net(torch.tensor(X.to_numpy(), dtype=torch.float32))[:, 0].numpy()
    got = np.array([v for (v,) in conn.execute("SELECT MODEL(net)!forward(f1, f2, f3) FROM feats ORDER BY id"
                                                ).fetchall()])
    assert np.allclose(got, want, atol=1e-6)
    scripted = torch.jit.script(net)
    mv = reg.log_model(scripted, model_name="scripted", sample_input_data=torch.zeros(4, 3))
    assert mv.show_functions()[0]["arguments"] == "input_feature_0 FLOAT[]"
    got = np.array([v for (v,) in conn.execute("SELECT MODEL(scripted)!forward([f1, f2, f3]::FLOAT[]) FROM feats "
                                                "ORDER BY id").fetchall()])
    assert np.allclose(got, want, atol=1e-6)
    heads = K.TwoHeads.make()
    mv = reg.log_model(heads, model_name="heads", sample_input_data=torch.zeros(2, 3))
    assert mv.show_functions()[0]["return_type"] == 'STRUCT("output_feature_0" FLOAT, "output_feature_1" FLOAT[])'
    with torch.inference_mode():
        total, hidden = heads(torch.tensor(X.to_numpy()[:5], dtype=torch.float32))
    out = mv.run(pd.DataFrame({"input_feature_0": list(X.to_numpy()[:5])}), function_name="forward")
    assert np.allclose(out["output_feature_0"].to_numpy(dtype=float), total.numpy(), atol=1e-6)
    assert np.allclose(np.stack(out["output_feature_1"].to_numpy()), hidden.numpy(), atol=1e-6)
    deps = json.loads(rows(conn, "SELECT dependencies FROM (SHOW VERSIONS IN MODEL net)")[0]["dependencies"])
    assert deps["conda"] == [f"torch=={torch.__version__}"] and "+cpu" in torch.__version__


def test_sentence_transformer_and_pipeline_in_the_warehouse(reg: Registry, conn: Any) -> None:
    embedder, classifier = K.minilm(), K.text_classifier()
    mv = reg.log_model(embedder, model_name="minilm", sample_input_data=K.SENTENCES)
    (encode,) = mv.show_functions()
    assert encode["arguments"] == "input_feature_0 VARCHAR" and encode["return_type"] == "FLOAT[]"
    assert json.loads(rows(conn, "SELECT outputs FROM (SHOW FUNCTIONS IN MODEL minilm)")[0]["outputs"]) == [
        {"name": "output_feature_0", "type": "FLOAT", "shape": [384]}]
    conn.execute("CREATE TABLE sentences AS SELECT * FROM (VALUES " +
                 ", ".join(f"({i}, '{s.replace(chr(39), chr(39) * 2)}')" for i, s in enumerate(K.SENTENCES)) +
                 ") t(id, s)")
    got = np.array([v for (v,) in conn.execute("SELECT MODEL(minilm)!encode(s) FROM sentences ORDER BY id").fetchall()])
    assert got.shape == (10, 384)
    assert np.allclose(got, embedder.encode(K.SENTENCES), atol=1e-5)
    mv = reg.log_model(classifier, model_name="sentiment", sample_input_data=K.SENTENCES[:3])
    (call,) = mv.show_functions()
    assert call["name"] == "__CALL__" and call["return_type"] == 'STRUCT("label" VARCHAR, "score" DOUBLE)'
    got_rows = conn.execute("SELECT MODEL(sentiment)!__call__(s) FROM sentences ORDER BY id").fetchall()
    want = classifier(K.SENTENCES)
    assert [r["label"] for (r,) in got_rows] == [w["label"] for w in want]
    assert [r["score"] for (r,) in got_rows] == pytest.approx([w["score"] for w in want], abs=1e-6)


# --- MLflow models ------------------------------------------------------------------------------------


def test_mlflow_directory_matches_mlflow_pyfunc(reg: Registry, conn: Any, tmp_path: Path) -> None:
    import mlflow.pyfunc

    path = tmp_path / "clf_model"
    K.save_mlflow_sklearn(path)
    conn.execute(f"CREATE MODEL mlf WITH VERSION v1 FROM '{path}' COMMENT = 'saved by mlflow'")
    version = rows(conn, "SELECT * FROM (SHOW VERSIONS IN MODEL mlf)")[0]
    assert (version["model_type"], version["runnable_in"], version["comment"]) == (
        "mlflow", "WAREHOUSE,SPCS", "saved by mlflow")
    deps = json.loads(version["dependencies"])
    assert deps["pip"][0].startswith("mlflow-skinny==") and any(d.startswith("scikit-learn==") for d in deps["pip"])
    assert rows(conn, "SELECT arguments FROM (SHOW FUNCTIONS IN MODEL mlf)") == [
        {"arguments": "PREDICT(F1 DOUBLE, F2 DOUBLE, F3 DOUBLE) RETURN BIGINT"}]
    want = mlflow.pyfunc.load_model(str(path)).predict(feats(conn))
    got = conn.execute("SELECT MODEL(mlf, v1)!predict(f1, f2, f3) FROM feats ORDER BY id").fetchall()
    assert [g for (g,) in got] == list(want)
    with pytest.raises(errors.ProgrammingError, match="model DUCKSERVE.PUBLIC.MLF already exists: use CREATE OR "
                                                      "REPLACE MODEL, or add a version with ALTER MODEL"):
        conn.execute(f"CREATE MODEL mlf WITH VERSION v1 FROM '{path}'")
    conn.execute(f"CREATE MODEL IF NOT EXISTS mlf WITH VERSION v1 FROM '{path}'")
    conn.execute(f"ALTER MODEL mlf ADD VERSION v2 FROM '{path}'")
    assert [r["name"] for r in rows(conn, "SHOW VERSIONS IN MODEL mlf")] == ["V1", "V2"]
    conn.execute(f"CREATE OR REPLACE MODEL mlf WITH VERSION v3 FROM '{path}'")
    assert [r["name"] for r in rows(conn, "SHOW VERSIONS IN MODEL mlf")] == ["V3"]
    with pytest.raises(errors.ProgrammingError, match="is not a directory"):
        conn.execute(f"CREATE MODEL other FROM '{tmp_path / 'nowhere'}'")
    with pytest.raises(errors.SQLSyntaxError, match="FROM MODEL is not supported"):
        conn.execute("CREATE MODEL other WITH VERSION v1 FROM MODEL mlf")


def test_mlflow_options_from_the_databricks_seed(reg: Registry, tmp_path: Path) -> None:
    """pip_requirements, extra_pip_requirements, conda_env (dict and conda.yaml), code_paths, signature and
    input_example: honoured when MLflow saves the model, and when duckserve logs the directory."""
    import mlflow.pyfunc

    helper = tmp_path / "helpers" / "scaling.py"
    helper.parent.mkdir()
    helper.write_text("def scale(values):\n    return values * 3.0\n")

    class Tripler(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.Series:
            from scaling import scale

            return scale(model_input["x"])

    path = tmp_path / "tripler"
    conda_env = {"channels": ["defaults"], "dependencies": [f"python={PY}", "pandas", {"pip": ["mlflow", "cloudpickle"]}],
                 "name": "mlflow-env"}
    mlflow.pyfunc.save_model(str(path), python_model=Tripler(), code_paths=[str(helper)], conda_env=conda_env,
                             input_example=pd.DataFrame({"x": [1.0, 2.0]}))
    mv = reg.log_model(str(path), model_name="tripler", version_name="saved")
    assert mv.show_functions()[0]["arguments"] == "x DOUBLE"
    record = json.loads(reg.get_model("tripler").show_versions()["dependencies"][0])
    assert record["conda"] == ["defaults::pandas"]  # conda.yaml's channel makes it explicit: SPCS only
    assert reg.get_model("tripler").show_versions()["runnable_in"][0] == "SPCS"
    # duckserve's log_model takes the seed's options too; pip_requirements replaces what MLflow recorded
    mv = reg.log_model(str(path), model_name="tripler", version_name="pip",
                       pip_requirements=["cloudpickle", "pandas"], extra_pip_requirements=["six"])
    assert json.loads(reg.get_model("tripler").show_versions()["dependencies"][1]) == {
        "conda": [], "pip": [r for r in _skinny(mv)] + ["cloudpickle", "pandas", "six"]}
    yaml_env = tmp_path / "conda.yaml"
    yaml_env.write_text("channels: [conda-forge]\ndependencies:\n  - pandas\n  - pip:\n    - cloudpickle\n")
    reg.log_model(str(path), model_name="tripler", version_name="yaml", conda_env=str(yaml_env))
    deps = json.loads(reg.get_model("tripler").show_versions()["dependencies"][2])
    assert deps["conda"] == ["conda-forge::pandas"] and "cloudpickle" in deps["pip"]
    # an explicit signature wins over the directory's; an input example alone is enough to infer one
    sig = ModelSignature(inputs=[FeatureSpec("x", DataType.DOUBLE)], outputs=[FeatureSpec("tripled", "DOUBLE")])
    mv = reg.log_model(str(path), model_name="tripler", version_name="sig", signature=sig)
    assert mv.show_functions()[0]["signature"]["outputs"][0]["name"] == "tripled"
    # the model's code_paths travel inside the directory (MLflow puts code/ on sys.path when it loads)
    local = reg.log_model(str(path), model_name="tripler_local", conda_env={"dependencies": ["pandas"]})
    assert reg.get_model("tripler_local").show_versions()["runnable_in"][0] == "WAREHOUSE,SPCS"
    assert local.run(pd.DataFrame({"x": [1.0, 2.5]}))["output_feature_0"].tolist() == [3.0, 7.5]


def _skinny(mv: Any) -> list[str]:
    deps = json.loads(mv.registry.get_model(mv.model_name).show_versions()["dependencies"][1])
    return [r for r in deps["pip"] if r.startswith("mlflow-skinny")]


def test_conflicting_conda_and_pip_dependencies_warn_as_the_seed_says(reg: Registry) -> None:
    X, _, label = K.tabular()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.log_model(LogisticRegression().fit(X, label), model_name="both", sample_input_data=X,
                      conda_dependencies=["scikit-learn"], pip_requirements=["numpy"])
    messages = [str(w.message) for w in caught]
    assert any("both conda_dependencies and pip_requirements are set" in m and "use only conda_dependencies or "
               "only pip_requirements" in m for m in messages)


# --- signatures ----------------------------------------------------------------------------------------


def test_signature_types_map_to_duckdb_and_back() -> None:
    from duckserve.inference_server.manifest import DUCKDB_TYPES

    for data_type in DataType:
        sql = data_type.duckdb_type
        assert DUCKDB_TYPES[data_type.value] == sql
        assert from_duckdb_type(sql) == (data_type.value, None)
        vector = FeatureSpec("v", data_type, shape=(384,)).to_feature()
        assert vector.duckdb_type == sql + "[]"
    assert from_duckdb_type("FLOAT[384]") == ("FLOAT", [384])
    assert from_duckdb_type("double[][]") == ("DOUBLE", [-1, -1])
    assert from_duckdb_type("DECIMAL(10,2)") == ("DOUBLE", None)
    assert FeatureSpec("e", "FLOAT[384]").to_feature().shape == [384]
    with pytest.raises(ValueError, match="has no signature data type"):
        from_duckdb_type("INTERVAL")


def test_explicit_signatures_in_every_form(reg: Registry, conn: Any) -> None:
    from mlflow.models import infer_signature

    X, _, label = K.tabular()
    model = LogisticRegression().fit(X, label)
    ours = ModelSignature(inputs=[FeatureSpec(c, DataType.DOUBLE) for c in X.columns],
                          outputs=[FeatureSpec("LABEL", DataType.INT64)])
    reg.log_model(model, model_name="sig", version_name="ours", signatures={"predict": ours},
                  options={"target_methods": ["predict"]})
    as_dict = {"inputs": [{"name": c, "type": "DOUBLE"} for c in X.columns], "outputs": [{"name": "L", "type": "BIGINT"}]}
    reg.log_model(model, model_name="sig", version_name="dict", signatures={"predict": as_dict},
                  options={"target_methods": ["predict"]})
    reg.log_model(model, model_name="sig", version_name="mlflow", options={"target_methods": ["predict"]},
                  signatures={"predict": infer_signature(X, model.predict(X))})
    got = [r["arguments"] for r in rows(conn, "SELECT arguments FROM (SHOW FUNCTIONS IN MODEL sig VERSION ours)")]
    assert got == ["PREDICT(F1 DOUBLE, F2 DOUBLE, F3 DOUBLE) RETURN BIGINT"]
    for version in ("ours", "dict", "mlflow"):
        value = conn.execute(f"SELECT MODEL(sig, {version})!predict(f1, f2, f3) FROM feats ORDER BY id LIMIT 3"
                             ).fetchall()
        assert [v for (v,) in value] == model.predict(feats(conn).head(3)).tolist()
    with pytest.raises(errors.ProgrammingError, match="signature= describes one method"):
        reg.log_model(model, model_name="sig", version_name="bad", signature=ours)


@pytest.fixture
def home_conn(tmp_path: Path) -> Iterator[Any]:
    connection = duckserve.connect(home=str(tmp_path / "home2"))
    yield connection
    connection.close()


def test_unsupported_objects_name_the_supported_kinds(home_conn: Any) -> None:
    with pytest.raises(errors.ProgrammingError, match="cannot serve a builtins.dict: supported kinds are") as info:
        Registry(home_conn).log_model({"not": "a model"}, model_name="nope", sample_input_data=[1.0])
    for kind in ("XGBoost", "LightGBM", "PyTorch", "sentence-transformers", "transformers pipelines", "MLflow",
                 "scikit-learn", "CustomModel"):
        assert kind in str(info.value)
