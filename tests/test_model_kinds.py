"""One model of each kind logged, deployed and called from SQL, every answer compared with the model's
own in-process answer; the seed's two end-to-end examples run with only their import lines changed.

Heavy: real uv-built environments (CPU torch from the local wheel, never the index's CUDA build) and
real inference servers. One account home for the whole module, so environments are built once and
shared: the XGBoost seed example and the Booster share one, nn.Module and TorchScript one, the
MiniLM seed example and the transformers pipeline one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import duckserve
from duckserve import errors
from duckserve.registry import Registry
from tests import model_kinds as K
from tests.conftest import rows

pytestmark = pytest.mark.xdist_group("model_kinds")

ROOT = Path(__file__).resolve().parent.parent
SETUP = """
CREATE COMPUTE POOL IF NOT EXISTS my_cpu_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_S' AUTO_RESUME = TRUE;
CREATE COMPUTE POOL IF NOT EXISTS my_gpu_pool MIN_NODES = 1 MAX_NODES = 4 INSTANCE_FAMILY = 'GPU_NV_S' AUTO_RESUME = TRUE;
CREATE IMAGE REPOSITORY IF NOT EXISTS my_image_repo;
"""
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("kinds") / "home"
    conn = duckserve.connect(home=str(home))
    conn.cursor().execute(SETUP)
    conn.execute("CREATE TABLE feats AS SELECT range AS id, (range % 7 - 3) / 2.0 AS f1, (range % 5 - 2) / 3.0 AS f2, "
                 "(range % 3 - 1)::DOUBLE AS f3 FROM range(500)")
    yield {"conn": conn, "home": home, "reg": Registry(conn), "tmp": tmp_path_factory.mktemp("kinds_files")}
    for service in rows(conn, "SHOW SERVICES EXCLUDE JOBS"):
        conn.execute(f"DROP SERVICE IF EXISTS {service['database_name']}.{service['schema_name']}.{service['name']}")
    conn.close()
    print("\nmodel-kind timings (s):", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


def feats(conn: Any) -> pd.DataFrame:
    frame = conn.execute("SELECT f1, f2, f3 FROM feats ORDER BY id").fetch_pandas_all()
    return frame.set_axis(["F1", "F2", "F3"], axis=1)


def deploy(mv: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    started = time.perf_counter()
    info: dict[str, Any] = mv.create_service(service_name=name, service_compute_pool=kwargs.pop("pool", "my_cpu_pool"),
                                             image_repo="my_image_repo", num_workers=kwargs.pop("num_workers", 1),
                                             **kwargs)
    TIMINGS[f"deploy {name}"] = time.perf_counter() - started
    return info


def build_log(conn: Any, job: str) -> str:
    text: str = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{job}', 0, 'model-build')").fetchone()[0]
    return text


def environment_of(conn: Any, home: Path, service: str) -> Path:
    key = rows(conn, f"SELECT spec_digest FROM (SHOW SERVICES LIKE '{service.upper()}')")[0]["spec_digest"]
    return home / "envs" / key


def installed(environment: Path) -> set[str]:
    site = next(environment.glob("lib/python*/site-packages"))
    return {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}


def run_seed(kinds: dict[str, Any], script: str, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a seed example (its import lines changed) in a fresh Python, against the module's home."""
    env = {**os.environ, "DUCKSERVE_HOME": str(kinds["home"]), "PYTHONPATH": str(ROOT), **(extra_env or {})}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900,
                          cwd=str(ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    result["seconds"] = time.perf_counter() - started
    return result


# --- XGBoost: the seed's CPU example, then a Booster in the same environment ---------------------------

XGBOOST_SEED = '''
from duckserve import registry
from duckserve.connection_params import SnowflakeLoginOptions
from duckserve.snowpark import Session
from xgboost import XGBRegressor

# your model training code here output of which is a trained xgb_model
session = Session.builder.configs(SnowflakeLoginOptions("connection_name")).create()
from tests.model_kinds import tabular
X, y, _ = tabular()
xgb_model = XGBRegressor(n_estimators=10, max_depth=3).fit(X, y)
pandas_test_df = X.head(200)

# Open model registry
reg = registry.Registry(session=session, database_name='my_registry_db', schema_name='my_registry_schema')

# Log the model in Snowflake Model Registry
model_ref = reg.log_model(
model_name="my_xgb_forecasting_model",
version_name="v1",
model=xgb_model,
conda_dependencies=["scikit-learn","xgboost"],
sample_input_data=pandas_test_df,
comment="XGBoost model for forecasting customer demand"
)

# Deploy the model to SPCS
model_ref.create_service(
service_name="forecast_model_service",
service_compute_pool="my_cpu_pool",
image_repo="my_image_repo",
ingress_enabled=True)

# See all services running a model
model_ref.list_services()

# Run on SPCS
model_ref.run(pandas_test_df, function_name="predict", service_name="forecast_model_service")
'''
XGBOOST_CHECKS = '''
import json
served = model_ref.run(pandas_test_df, function_name="predict", service_name="forecast_model_service")
session.duckdb.register("test_df", pandas_test_df)
sql = session.execute('SELECT forecast_model_service!predict("F1", "F2", "F3") FROM test_df').fetchall()
listed = model_ref.list_services()
print("RESULT " + json.dumps({
    "local": xgb_model.predict(pandas_test_df).tolist(), "run": served["output_feature_0"].tolist(),
    "sql": [v for (v,) in sql], "listed": listed["name"].tolist(),
    "versions": session.execute("SHOW VERSIONS IN MODEL my_registry_db.my_registry_schema.my_xgb_forecasting_model"
                                ).fetch_pandas_all()[["name", "runnable_in", "dependencies"]].to_dict("records"),
    "job": session.execute("SELECT build_job FROM (DESCRIBE SERVICE forecast_model_service)").fetchone()[0],
}))
'''
XGBOOST_TAIL = '''
# Delete the service
model_ref.delete_service("forecast_model_service")
'''


def test_seed_xgboost_example_and_a_booster(kinds: dict[str, Any]) -> None:
    import xgboost

    conn, reg = kinds["conn"], kinds["reg"]
    result = run_seed(kinds, XGBOOST_SEED + XGBOOST_CHECKS + XGBOOST_TAIL)
    TIMINGS["seed xgboost example"] = result["seconds"]
    assert np.allclose(result["run"], result["local"], atol=1e-6)
    assert np.allclose(result["sql"], result["local"], atol=1e-6)
    assert result["listed"] == ["FORECAST_MODEL_SERVICE"]
    (version,) = result["versions"]
    assert version["runnable_in"] == "WAREHOUSE,SPCS"  # conda names without a channel, installed here
    log = build_log(conn, result["job"])
    assert "xgboost-cpu" in log and "nvidia" not in log.lower()  # conda's xgboost on CPU: no CUDA NCCL
    assert rows(conn, "SHOW SERVICES LIKE 'FORECAST_MODEL_SERVICE'") == []  # the seed deleted it
    # a Booster with the same dependencies reuses the environment: no second build
    booster = K.xgb_booster()
    mv = reg.log_model(booster, model_name="booster", sample_input_data=K.tabular()[0],
                       conda_dependencies=["scikit-learn", "xgboost"])
    info = deploy(mv, "booster_svc")
    assert info["image_built"] is False
    got = conn.execute("SELECT booster_svc!predict(f1, f2, f3) FROM feats ORDER BY id").fetchall()
    assert np.allclose([g for (g,) in got], booster.predict(xgboost.DMatrix(feats(conn))), atol=1e-6)
    conn.execute("DROP SERVICE booster_svc")


# --- LightGBM ------------------------------------------------------------------------------------------


def test_lightgbm_service(kinds: dict[str, Any]) -> None:
    conn, reg = kinds["conn"], kinds["reg"]
    model = K.lgbm_classifier()
    mv = reg.log_model(model, model_name="lgbm", sample_input_data=K.tabular()[0])
    deploy(mv, "lgbm_svc")
    X = feats(conn)
    got = conn.execute("SELECT lgbm_svc!predict(f1, f2, f3) AS p, lgbm_svc!predict_proba(f1, f2, f3) AS pr "
                       "FROM feats ORDER BY id").fetchall()
    assert [p for p, _ in got] == model.predict(X).tolist()
    assert np.allclose([list(pr.values()) for _, pr in got], model.predict_proba(X), atol=1e-9)
    out = mv.run(X.head(20), function_name="predict_proba", service_name="lgbm_svc")
    assert np.allclose(out[["output_feature_0", "output_feature_1"]].to_numpy(), model.predict_proba(X.head(20)))
    # a call with a wrong type fails before any batch is sent, naming the function and the argument
    with pytest.raises(errors.ProgrammingError, match=r"LGBM_SVC!PREDICT: argument 2 \(F2\) expects DOUBLE, got "
                                                      r"VARCHAR"):
        conn.execute("SELECT lgbm_svc!predict(f1, f2::VARCHAR, f3) FROM feats")
    conn.execute("DROP SERVICE lgbm_svc")


# --- PyTorch: nn.Module and TorchScript, one environment -----------------------------------------------


def test_pytorch_module_and_torchscript_services(kinds: dict[str, Any]) -> None:
    import torch

    conn, reg, home = kinds["conn"], kinds["reg"], kinds["home"]
    net = K.torch_net()
    module_mv = reg.log_model(net, model_name="net", sample_input_data=K.tabular()[0])
    script_mv = reg.log_model(torch.jit.script(net), model_name="scripted", sample_input_data=torch.zeros(4, 3))
    first = deploy(module_mv, "net_svc")
    second = deploy(script_mv, "scripted_svc")
    assert first["image_built"] is True and second["image_built"] is False  # same dependencies: torch==...+cpu
    X = feats(conn)
    with torch.inference_mode():
        want = net(torch.tensor(X.to_numpy(), dtype=torch.float32))[:, 0].numpy()
    got = np.array(conn.execute("SELECT net_svc!forward(f1, f2, f3), scripted_svc!forward([f1, f2, f3]::FLOAT[]) "
                                "FROM feats ORDER BY id").fetchall(), dtype=float)
    assert np.allclose(got[:, 0], want, atol=1e-6) and np.allclose(got[:, 1], want, atol=1e-6)
    log = build_log(conn, first["build_job"])
    assert f"torch=={torch.__version__}" in log and "+cpu" in torch.__version__
    environment = environment_of(conn, home, "net_svc")
    packages = installed(environment)
    assert "torch" in packages and not any(p.startswith("nvidia") for p in packages)
    conn.execute("DROP SERVICE net_svc")
    conn.execute("DROP SERVICE scripted_svc")


# --- sentence-transformers: the seed's GPU example (on a host without GPUs: the CPU) ----------------

MINILM_SEED = '''
from duckserve import registry
from duckserve.connection_params import SnowflakeLoginOptions
from duckserve.snowpark import Session
from sentence_transformers import SentenceTransformer

session = Session.builder.configs(SnowflakeLoginOptions("connection_name")).create()
reg = registry.Registry(session=session, database_name='my_registry_db', schema_name='my_registry_schema')

# Take an example sentence transformer from HF
embed_model = SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2')

# Have some sample input data
input_data = [
    "This is the first sentence.",
    "Here's another sentence for testing.",
    "The quick brown fox jumps over the lazy dog.",
    "I love coding and programming.",
    "Machine learning is an exciting field.",
    "Python is a popular programming language.",
    "I enjoy working with data.",
    "Deep learning models are powerful.",
    "Natural language processing is fascinating.",
    "I want to improve my NLP skills.",
]

# Log the model with pip dependencies
pip_model = reg.log_model(
    embed_model,
    model_name="sentence_transformer_minilm",
    version_name="pip",
    sample_input_data=input_data, # Needed for determining signature of the model
    pip_requirements=["sentence-transformers", "torch", "transformers"], # If you want to run this model in the Warehouse, you can use conda_dependencies instead
)

# Force Snowflake to not try to check warehouse
conda_forge_model = reg.log_model(
    embed_model,
    model_name="sentence_transformer_minilm",
    version_name="conda_forge_force",
    sample_input_data=input_data,
    # setting any package from conda-forge is sufficient to know that it can't be run in warehouse
    conda_dependencies=["sentence-transformers", "conda-forge::pytorch", "transformers"]
)

# Deploy the model to SPCS
pip_model.create_service(
    service_name="my_minilm_service",
    service_compute_pool="my_gpu_pool", # Using GPU_NV_S - smallest GPU node that can run the model
    image_repo="my_image_repo",
    ingress_enabled=True,
    gpu_requests="1", # Model fits in GPU memory; only needed for GPU pool
    max_instances=4, # 4 instances were able to run 10M inferences from an XS warehouse
)

# See all services running a model
pip_model.list_services()

# Run on SPCS
pip_model.run(input_data, function_name="encode", service_name="my_minilm_service")
'''
MINILM_CHECKS = '''
import json
import numpy as np
served = pip_model.run(input_data, function_name="encode", service_name="my_minilm_service")
local = embed_model.encode(input_data)
sql = session.execute("SELECT my_minilm_service!encode('This is a test sentence.')").fetchone()[0]
describe = session.execute("SELECT gpu_requests, gpu_note, num_workers, build_job FROM (DESCRIBE SERVICE my_minilm_service)"
                           ).fetch_pandas_all().to_dict("records")[0]
print("RESULT " + json.dumps({
    "run_max_diff": float(np.abs(np.stack(served["output_feature_0"].to_numpy()) - local).max()),
    "sql_len": len(sql), "sql_max_diff": float(np.abs(np.array(sql) - embed_model.encode(["This is a test sentence."])[0]).max()),
    "describe": describe,
    "containers": len(session.execute("SHOW SERVICE CONTAINERS IN SERVICE my_minilm_service").fetchall()),
    "log": session.execute("CALL SYSTEM$GET_SERVICE_LOGS('my_minilm_service', 0, 'model-inference')").fetchone()[0],
    "versions": session.execute("SHOW VERSIONS IN MODEL my_registry_db.my_registry_schema.sentence_transformer_minilm"
                                ).fetch_pandas_all()[["name", "runnable_in", "warehouse_reason"]].to_dict("records"),
}))
'''
MINILM_TAIL = '''
# Delete the service
pip_model.delete_service("my_minilm_service")
'''


def test_seed_minilm_example_on_a_host_without_gpus(kinds: dict[str, Any]) -> None:
    cache = K.hub_cache(kinds["tmp"] / "hf-hub")
    result = run_seed(kinds, MINILM_SEED + MINILM_CHECKS + MINILM_TAIL,
                      {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "DUCKSERVE_HOST_GPUS": "0"})
    TIMINGS["seed minilm example"] = result["seconds"]
    assert result["run_max_diff"] < 1e-5
    assert result["sql_len"] == 384 and result["sql_max_diff"] < 1e-5
    describe = result["describe"]
    assert describe["gpu_requests"] == "1" and describe["num_workers"] == 1  # GPU services: one worker
    assert "no NVIDIA GPU: the service runs on the CPU" in describe["gpu_note"]
    assert "no NVIDIA GPU: the service runs on the CPU" in result["log"]
    assert result["containers"] == 4
    by_version = {v["name"]: v for v in result["versions"]}
    assert by_version["PIP"]["runnable_in"] == "SPCS" and "PyPI" in by_version["PIP"]["warehouse_reason"]
    assert by_version["CONDA_FORGE_FORCE"]["runnable_in"] == "SPCS"
    assert "conda-forge::pytorch" in by_version["CONDA_FORGE_FORCE"]["warehouse_reason"]
    log = build_log(kinds["conn"], describe["build_job"])
    # unpinned torch (the seed's pip_requirements) is held to the local CPU build
    assert "constraints:  torch==" in log and "+cpu" in log
    kinds["minilm_job"] = describe["build_job"]


# --- transformers pipeline: shares the MiniLM example's environment -------------------------------------


def test_transformers_pipeline_service(kinds: dict[str, Any]) -> None:
    conn, reg = kinds["conn"], kinds["reg"]
    classifier = K.text_classifier()
    mv = reg.log_model(classifier, model_name="sentiment", sample_input_data=K.SENTENCES[:3],
                       pip_requirements=["sentence-transformers", "torch", "transformers"])
    info = deploy(mv, "sentiment_svc")
    if "minilm_job" in kinds:
        assert info["image_built"] is False
    conn.execute("CREATE OR REPLACE TABLE sentences AS SELECT * FROM (VALUES " +
                 ", ".join(f"({i}, '{s.replace(chr(39), chr(39) * 2)}')" for i, s in enumerate(K.SENTENCES)) +
                 ") t(id, s)")
    got = conn.execute("SELECT sentiment_svc!__call__(s) FROM sentences ORDER BY id").fetchall()
    want = classifier(K.SENTENCES)
    assert [r["label"] for (r,) in got] == [w["label"] for w in want]
    assert [r["score"] for (r,) in got] == pytest.approx([w["score"] for w in want], abs=1e-6)
    conn.execute("DROP SERVICE sentiment_svc")


# --- MLflow: a model saved by MLflow's own code ----------------------------------------------------------


def test_mlflow_model_service_matches_pyfunc(kinds: dict[str, Any]) -> None:
    import mlflow.pyfunc

    conn, reg = kinds["conn"], kinds["reg"]
    path = kinds["tmp"] / "mlflow_clf"
    K.save_mlflow_sklearn(path)
    conn.execute(f"CREATE MODEL mlflow_clf WITH VERSION v1 FROM '{path}'")
    mv = reg.get_model("mlflow_clf").version("v1")
    info = deploy(mv, "mlflow_svc")
    X = feats(conn)
    want = mlflow.pyfunc.load_model(str(path)).predict(X)
    got = conn.execute("SELECT mlflow_svc!predict(f1, f2, f3) FROM feats ORDER BY id").fetchall()
    assert [g for (g,) in got] == list(want)
    served = mv.run(X, function_name="predict", service_name="mlflow_svc")
    assert served["output_feature_0"].tolist() == list(want)
    assert "mlflow-skinny" in build_log(conn, info["build_job"])
    # the same version also runs in the warehouse: its recorded requirements are installed here
    assert mv.run(X)["output_feature_0"].tolist() == list(want)
    conn.execute("DROP SERVICE mlflow_svc")


def test_environment_sizes_and_build_times(kinds: dict[str, Any]) -> None:
    """Not a timed assertion: the figures go to the test output (pytest -s) for the bench notes."""
    conn, home = kinds["conn"], kinds["home"]
    jobs = [r for r in rows(conn, "SHOW SERVICES") if r["is_job"] == "true"]
    assert jobs and all(j["status"] in ("DONE", "FAILED") for j in jobs)
    sizes = {}
    for environment in (home / "envs").iterdir():
        if environment.is_dir() and not environment.name.startswith("."):
            done = subprocess.run(["du", "-sm", str(environment)], capture_output=True, text=True)
            sizes[environment.name[:12]] = done.stdout.split()[0] if done.returncode == 0 else "?"
            meta = json.loads((environment / ".complete").read_text())
            TIMINGS[f"build {environment.name[:12]} ({sizes[environment.name[:12]]} MB)"] = meta["build_seconds"]
            assert not any(p.startswith("nvidia") for p in installed(environment))
    print("\nenvironment sizes (MB):", json.dumps(sizes))
