"""Every HTTP client of a model, through a real ingress in front of a real instance: MLflow's
scoring protocol compared with MLflow's own scoring server on the same model, the Open Inference
Protocol driven by ``tritonclient[http]`` (JSON and binary tensors), and Snowflake's external
function contract (its headers, a retried batch id, 202 and polling)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from duckserve.engine import access as A
from duckserve.engine import tokens as T
from duckserve.engine.account import Account
from duckserve.engine.catalog import CatalogObject
from duckserve.inference_server.handlers import save_package
from duckserve.model import CustomModel, inference_api
from tests.custom_models import Sleeper
from tests.servers import Server, start_inference_server, start_ingress, wait_until_ready

pytestmark = pytest.mark.xdist_group("server")

DATABASE, SCHEMA, SERVICE = "DUCKSERVE", "PUBLIC", "CLIENTS_SVC"
KEY = f"{DATABASE}.{SCHEMA}.{SERVICE}"


@dataclass
class World:
    features: pd.DataFrame
    model: Any
    secret: str
    ingress: Server
    instance: Server
    mlflow: Server
    slow_ingress: Server
    slow_instance: Server
    account: Account
    base: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f'Snowflake Token="{self.secret}"'}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mlflow_server(model_dir: Path, workdir: Path) -> Server:
    """MLflow's own scoring server (``mlflow models serve`` runs the same uvicorn app)."""
    port = _free_port()
    log_path = workdir / "mlflow.log"
    env = {"__pyfunc_model_path__": str(model_dir), "PATH": "/usr/bin:/bin"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                                    "--log-level", "warning", "mlflow.pyfunc.scoring_server.app:app"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    return wait_until_ready(Server("MLflow's scoring server", process, log_path, port), "/ping", timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    base = tmp_path_factory.mktemp("clients")
    rng = np.random.default_rng(11)
    features = pd.DataFrame(rng.normal(size=(40, 3)), columns=["F1", "F2", "F3"])
    labels = (features["F1"] - features["F2"] + 0.3 * features["F3"] > 0).astype(int)
    model = LogisticRegression().fit(features, labels)
    save_package(model, base / "package", name="CLASSIFIER", version="V1", sample_input=features.head(5))
    mlflow.sklearn.save_model(model, str(base / "mlflow_model"), serialization_format="cloudpickle",
                              signature=infer_signature(features, model.predict(features)))
    slow = Sleeper()
    save_package(slow, base / "slow", name="SLOW", version="V1",
                 sample_input=pd.DataFrame({"x": [1.0, 2.0], "seconds": [0.0, 0.0]}))

    account = Account(base / "home")
    admin = account.open_session()
    secret = str(T.add_token(account, admin, "ADMIN", "CLIENTS").rows[0][1])
    servers: list[Server] = []
    try:
        instance = start_inference_server(base / "package", base / "run", "instance", service=KEY)
        servers.append(instance)
        slow_instance = start_inference_server(base / "slow", base / "run", "slow_instance",
                                               service=f"{DATABASE}.{SCHEMA}.SLOW_SVC")
        servers.append(slow_instance)
        for name, server in ((SERVICE, instance), ("SLOW_SVC", slow_instance)):
            add_service(account, name, server)
        ingress = start_ingress(base / "home", KEY, base / "run")
        servers.append(ingress)
        slow_ingress = start_ingress(base / "home", f"{DATABASE}.{SCHEMA}.SLOW_SVC", base / "run", "slow_ingress",
                                     extra=["--async-after", "0.5"])
        servers.append(slow_ingress)
        mlflow_server = start_mlflow_server(base / "mlflow_model", base)
        servers.append(mlflow_server)
        yield World(features, model, secret, ingress, instance, mlflow_server, slow_ingress, slow_instance, account, base)
    finally:
        for server in servers:
            server.stop()


def add_service(account: Account, name: str, server: Server) -> None:
    """A RUNNING service record whose one instance is ``server``."""
    account.catalog.insert(CatalogObject(A.SERVICE, name, owner=A.ACCOUNTADMIN, database=DATABASE, schema=SCHEMA,
                                         props={"status": "RUNNING", "instances": [
                                             {"instance_id": 0, "handle": {"port": server.port}}]}))


def post(url: str, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json",
         raw: bytes | None = None) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    with httpx.Client(trust_env=False, timeout=30) as client:
        return client.post(url, content=content, headers={"content-type": content_type, **(headers or {})})


# -- MLflow's scoring protocol ------------------------------------------------------------------

def mlflow_bodies(features: pd.DataFrame) -> dict[str, Any]:
    rows = features.to_numpy().tolist()
    return {
        "dataframe_split": {"dataframe_split": {"columns": list(features.columns), "data": rows}},
        "dataframe_split, columns reordered": {"dataframe_split": {
            "columns": ["F3", "F1", "F2"], "data": features[["F3", "F1", "F2"]].to_numpy().tolist()}},
        "dataframe_split with index": {"dataframe_split": {"columns": list(features.columns), "data": rows,
                                                           "index": list(range(100, 100 + len(rows)))}},
        "dataframe_records": {"dataframe_records": features.to_dict(orient="records")},
        "instances as records": {"instances": features.to_dict(orient="records")},
        "inputs as columns": {"inputs": features.to_dict(orient="list")},
        "inputs as one record": {"inputs": features.iloc[0].to_dict()},
        "with params": {"dataframe_split": {"columns": list(features.columns), "data": rows}, "params": {}},
        "params to a model without params": {"dataframe_split": {"columns": list(features.columns), "data": rows},
                                             "params": {"temperature": 0.5}},
        "params not an object, to a model without params": {"dataframe_records": features.to_dict(orient="records"),
                                                            "params": [1, 2]},
        "numbers as text": {"dataframe_split": {"columns": list(features.columns),
                                                "data": [[str(v) for v in row] for row in rows]}},
    }


@pytest.mark.parametrize("form", list(mlflow_bodies(pd.DataFrame({"F1": [0.0], "F2": [0.0], "F3": [0.0]}))))
def test_mlflow_formats_answer_as_mlflows_own_scoring_server(world: World, form: str) -> None:
    body = mlflow_bodies(world.features)[form]
    expected = post(world.mlflow.url + "/invocations", body)
    assert expected.status_code == 200, expected.text
    for url in (world.ingress.url + "/invocations", world.ingress.url + f"/serving-endpoints/{SERVICE.lower()}/invocations",
                world.instance.url + "/invocations"):
        got = post(url, body, world.auth)
        assert got.status_code == 200, got.text
        assert got.json() == expected.json(), url
    assert "predictions" in expected.json()


def test_mlflow_csv_answers_as_mlflows_own_scoring_server(world: World) -> None:
    text = world.features.to_csv(index=False).encode()
    expected = post(world.mlflow.url + "/invocations", None, content_type="text/csv", raw=text)
    got = post(world.ingress.url + "/invocations", None, world.auth, content_type="text/csv", raw=text)
    assert expected.status_code == got.status_code == 200, (expected.text, got.text)
    assert got.json() == expected.json()


@pytest.mark.parametrize("body", [{"data": [[1, 2, 3]]}, {"dataframe_split": {"data": []}, "instances": []}, [1, 2],
                                  {"dataframe_split": [[1, 2, 3]]}, {"dataframe_records": {"F1": 1}},
                                  {"dataframe_records": [{"F1": float("nan"), "F2": 0.0, "F3": 1.0}]}])
def test_mlflow_bad_requests_get_the_same_kind_of_400(world: World, body: Any) -> None:
    expected = post(world.mlflow.url + "/invocations", body)
    got = post(world.ingress.url + "/invocations", body, world.auth)
    assert expected.status_code == got.status_code == 400, (expected.text, got.text)
    assert got.json()["error_code"] == expected.json()["error_code"] == "BAD_REQUEST"
    formats = ("dataframe_split", "dataframe_records", "instances", "inputs")
    if not isinstance(body, dict) or len([k for k in body if k in formats]) != 1:
        for key in formats:
            assert key in got.json()["message"], got.text


def test_mlflow_other_method_and_content_types(world: World) -> None:
    rows = world.features.head(4).to_numpy().tolist()
    body = {"dataframe_split": {"columns": ["F1", "F2", "F3"], "data": rows}}
    got = post(world.ingress.url + "/invocations?method=predict_proba", body, world.auth)
    assert got.status_code == 200, got.text
    np.testing.assert_allclose(np.array(got.json()["predictions"]), world.model.predict_proba(world.features.head(4)))
    unsupported = post(world.ingress.url + "/invocations", None, world.auth, content_type="text/plain", raw=b"x")
    assert unsupported.status_code == 415 and unsupported.json()["error_code"] == "BAD_REQUEST"
    wrong_endpoint = post(world.ingress.url + "/serving-endpoints/other/invocations", body, world.auth)
    assert wrong_endpoint.status_code == 404 and "CLIENTS_SVC" in wrong_endpoint.json()["error"]


# -- MLflow's params, model errors, NaN and content types, against MLflow on a model with params ------

#: an MLflow model from code (no pickle): y = x * scale + n and a tag, with a params schema; it
#: raises below -100 and answers NaN, Infinity and -Infinity for 999, 998 and 997. The ``form``
#: parameter picks what predict returns: the frame, y alone as a one-column frame, a Series, an array
SCALER_CODE = """
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import set_model


def scaled(x, scale, n, label):
    if (x < -100).any():
        raise ValueError(f"x below -100: {x.min()}")
    y = x * scale + n
    y[x == 999], y[x == 998], y[x == 997] = np.nan, np.inf, -np.inf
    return pd.DataFrame({"y": y, "tag": [label] * len(x)})


class Scaler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        params = params or {}
        frame = scaled(model_input["x"].to_numpy(dtype=float), params.get("scale", 1.0), params.get("n", 0),
                       params.get("label", "a"))
        form = params.get("form", "frame")
        return {"frame": frame, "column": frame[["y"]], "series": frame["y"], "unnamed series": frame["y"].rename(None),
                "array": frame["y"].to_numpy()}[form]


set_model(Scaler())
"""
SCALER_PARAMS = {"scale": 1.0, "label": "a", "n": 0, "flag": False, "form": "frame"}
#: an MLflow model with a tensor signature, Tensor('float64', (-1, 3)): the sum of each row
SUMMER_CODE = """
import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model


class Summer(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input, dtype=float).sum(axis=1)


set_model(Summer())
"""


class ScalerModel(CustomModel):
    """The same model as a duckserve custom model: its keyword-only parameters are its params."""

    @inference_api
    def predict(self, df: pd.DataFrame, *, scale: float = 1.0, label: str = "a", n: int = 0,
                flag: bool = False) -> pd.DataFrame:
        x = df["x"].to_numpy(dtype=float)
        if (x < -100).any():
            raise ValueError(f"x below -100: {x.min()}")
        y = x * scale + n
        y[x == 999], y[x == 998], y[x == 997] = np.nan, np.inf, -np.inf
        return pd.DataFrame({"y": y, "tag": [label] * len(x)})


@dataclass
class Scorers:
    mlflow: Server  # MLflow's scoring server on the MLflow model
    ingress: Server  # our ingress before our instance of the same MLflow model
    custom: Server  # our instance of the custom model
    tensor_mlflow: Server  # MLflow's scoring server on the tensor-signature model
    tensor: Server  # our instance of it


@pytest.fixture(scope="module")
def scorers(world: World) -> Iterator[Scorers]:
    from concurrent.futures import ThreadPoolExecutor

    import mlflow.pyfunc
    from mlflow.models import infer_signature

    base = world.base / "scorers"
    base.mkdir()
    (base / "scaler.py").write_text(SCALER_CODE)
    (base / "summer.py").write_text(SUMMER_CODE)
    signature = infer_signature(pd.DataFrame({"x": [1.0, 2.0]}), pd.DataFrame({"y": [1.0, 2.0], "tag": ["a", "a"]}),
                                params=SCALER_PARAMS)
    mlflow.pyfunc.save_model(str(base / "mlflow_scaler"), python_model=str(base / "scaler.py"), signature=signature)
    mlflow.pyfunc.save_model(str(base / "mlflow_summer"), python_model=str(base / "summer.py"),
                             signature=infer_signature(np.ones((2, 3)), np.ones(2)))
    save_package(str(base / "mlflow_scaler"), base / "package", name="SCALER", version="V1")
    save_package(str(base / "mlflow_summer"), base / "summer", name="SUMMER", version="V1")
    save_package(ScalerModel(), base / "custom", name="CUSTOM_SCALER", version="V1",
                 sample_input=pd.DataFrame({"x": [1.0, 2.0]}))
    starts = {  # started side by side: each waits for its server's model to load
        "scaler": lambda: start_inference_server(base / "package", base / "run", "scaler",
                                                 service=f"{DATABASE}.{SCHEMA}.SCALER"),
        "custom": lambda: start_inference_server(base / "custom", base / "run", "custom_scaler"),
        "tensor": lambda: start_inference_server(base / "summer", base / "run", "summer"),
        "mlflow": lambda: start_mlflow_server(base / "mlflow_scaler", base / "mlflow_scaler_run"),
        "tensor_mlflow": lambda: start_mlflow_server(base / "mlflow_summer", base / "mlflow_summer_run"),
    }
    for name in ("mlflow_scaler_run", "mlflow_summer_run"):
        (base / name).mkdir()
    with ThreadPoolExecutor(len(starts)) as pool:
        futures = {name: pool.submit(start) for name, start in starts.items()}
    servers = {name: future.result() for name, future in futures.items() if future.exception() is None}
    try:
        if len(servers) < len(starts):
            raise next(f.exception() for f in futures.values() if f.exception() is not None)  # type: ignore[misc]
        add_service(world.account, "SCALER", servers["scaler"])
        servers["ingress"] = start_ingress(world.base / "home", f"{DATABASE}.{SCHEMA}.SCALER", base / "run",
                                           "scaler_ingress")
        yield Scorers(servers["mlflow"], servers["ingress"], servers["custom"], servers["tensor_mlflow"],
                      servers["tensor"])
    finally:
        for server in servers.values():
            server.stop()


def scaler_split(xs: list[float], **extra: Any) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["x"], "data": [[x] for x in xs]}, **extra}


SCALER_CASES: dict[str, Any] = {
    "no params: the defaults": scaler_split([1.0, 2.0]),
    "params": scaler_split([1.0, 2.0], params={"scale": 3.0, "label": "b", "n": 2, "flag": True}),
    "an integer for a double param": scaler_split([1.0], params={"scale": 3}),
    "unknown params are ignored": scaler_split([1.0], params={"zzz": 1, "scale": 2.0}),
    "params null": scaler_split([1.0], params=None),
    "params not an object": scaler_split([1.0], params=[1, 2]),
    "a string for a double param": scaler_split([1.0], params={"scale": "x"}),
    "a fraction for a long param": scaler_split([1.0], params={"n": 1.5}),
    "the model raises": scaler_split([1.0, -500.0]),
    "NaN and infinities": scaler_split([999.0, 998.0, 997.0, 1.0]),
    "NaN in the request": {"inputs": {"x": [float("nan"), 1.0]}},
    "records with params": {"dataframe_records": [{"x": 4.0}], "params": {"label": "r"}},
    "a missing input": {"dataframe_split": {"columns": ["q"], "data": [[1.0]]}},
    "instances as values of the one input": {"instances": [1.0, 2.0]},
    "inputs as one record": {"inputs": {"x": 1.0}},
    "inputs as records": {"inputs": [{"x": 1.0}, {"x": 3.0}]},
    "dataframe_split data as a flat list": {"dataframe_split": {"columns": ["x"], "data": [1.0, 2.0]}},
    "no rows": scaler_split([]),
    "an extra top-level key": {**scaler_split([1.0]), "other": 1},
    "an extra column": {"dataframe_split": {"columns": ["x", "z"], "data": [[1.0, 5]]}},
    "integers and nulls for a double": {"dataframe_split": {"columns": ["x"], "data": [[1], [None]]}},
    "a record without the input": {"dataframe_records": [{"x": 1.0}, {}]},
    "no format key": {"params": {"scale": 2.0}},
    "two format keys": {"inputs": [1.0], "instances": [1.0]},
    "numeric text and booleans for a double": {"dataframe_split": {"columns": ["x"], "data": [["1.5"], [True], [2]]}},
    "records of numeric text": {"dataframe_records": [{"x": "2.5"}, {"x": " 3 "}]},
    "text that is no number": {"dataframe_split": {"columns": ["x"], "data": [["1.5"], ["abc"]]}},
    "the model answers a one-column frame": scaler_split([1.0, 2.0], params={"form": "column"}),
    "the model answers a Series": scaler_split([1.0, 2.0], params={"form": "series"}),
    "the model answers an unnamed Series": scaler_split([1.0, 2.0], params={"form": "unnamed series"}),
    "the model answers an array": scaler_split([1.0, 999.0], params={"form": "array"}),
}
#: what predict returns is MLflow's model's choice; the custom model always answers its frame
MLFLOW_ONLY = {case for case in SCALER_CASES if case.startswith("the model answers")}


PARAMS_REFUSED = ("Invalid parameters found", "Parameters must be a dictionary")


def _same_error(got: httpx.Response, expected: httpx.Response, *, mlflow_model: bool) -> None:
    """The same status and MLflow error fields; the same message where MLflow's own checks refused
    (ours runs them for an MLflow model) and where the model raised."""
    assert got.status_code == expected.status_code, (got.text, expected.text)
    mine, theirs = got.json(), expected.json()
    for key in ("error_code", "error_class", "sqlstate"):
        assert mine.get(key) == theirs.get(key), (key, mine, theirs)
    assert ("stack_trace" in mine) == ("stack_trace" in theirs)
    if "stack_trace" in theirs:  # the model's own exception ends both tracebacks
        assert mine["stack_trace"].strip().splitlines()[-1] == theirs["stack_trace"].strip().splitlines()[-1]
        assert mine["message"] == theirs["message"]
    if any(words in theirs["message"] for words in PARAMS_REFUSED):
        if mlflow_model:
            assert mine["message"] == theirs["message"]
        else:
            assert any(mine["message"].startswith(words) for words in PARAMS_REFUSED), mine


@pytest.mark.parametrize("case", list(SCALER_CASES))
def test_mlflow_params_errors_and_nan_answer_as_mlflow(scorers: Scorers, world: World, case: str) -> None:
    """Our instance of an MLflow model with a params schema (through the ingress), and a custom model
    with the same keyword-only parameters, answer each request as MLflow's own server does."""
    body = SCALER_CASES[case]
    expected = post(scorers.mlflow.url + "/invocations", body)
    targets = [(scorers.ingress.url + "/invocations", True), (scorers.custom.url + "/invocations", False)]
    for url, mlflow_model in targets[:1] if case in MLFLOW_ONLY else targets:
        got = post(url, body, world.auth)
        if expected.status_code == 200:
            assert got.status_code == 200, (url, got.text)
            assert got.json() == expected.json() or json.dumps(got.json()) == json.dumps(expected.json()), url
        else:
            _same_error(got, expected, mlflow_model=mlflow_model)
    if case == "NaN and infinities":
        assert b"NaN" in expected.content and b"-Infinity" in expected.content
    if case == "params":
        assert expected.json()["predictions"][0] == {"y": 5.0, "tag": "b"}


TENSOR_CASES: dict[str, Any] = {
    "instances as rows": {"instances": [[1.0, 2.0, 3.0], [4, 5, 6]]},
    "inputs as rows": {"inputs": [[1.0, 2.0, 3.5]]},
    "dataframe_split without columns": {"dataframe_split": {"data": [[1.0, 2.0, 3.0]]}},
    "dataframe_split with any columns": {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1.0, 2.0, 3.0]]}},
    "dataframe_records": {"dataframe_records": [{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 0.5, "b": 0, "c": 0}]},
    "a row of the wrong width": {"instances": [[1.0, 2.0]]},
}


@pytest.mark.parametrize("case", list(TENSOR_CASES))
def test_mlflow_tensor_signature_answers_as_mlflow(scorers: Scorers, case: str) -> None:
    """A model whose signature is one tensor of 3 columns takes each row of any format as that tensor's row."""
    body = TENSOR_CASES[case]
    expected = post(scorers.tensor_mlflow.url + "/invocations", body)
    got = post(scorers.tensor.url + "/invocations", body)
    assert got.status_code == expected.status_code, (got.text, expected.text)
    if expected.status_code == 200:
        assert got.json() == expected.json()
    else:
        assert got.json()["error_code"] in ("BAD_REQUEST", expected.json()["error_code"]), (got.text, expected.text)


def test_mlflow_parquet_and_content_types_as_mlflow(scorers: Scorers, world: World) -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"x": [1.0, 2.0, 999.0]}).to_parquet(buffer)
    for content_type, raw in (("application/vnd.apache.parquet", buffer.getvalue()),
                              ("application/vnd.apache.parquet", b"not parquet"),
                              ("text/plain", b"x"), ("application/json; charset=latin-1", b"{}"),
                              ("application/json; foo=bar", json.dumps(scaler_split([1.0])).encode())):
        expected = post(scorers.mlflow.url + "/invocations", None, content_type=content_type, raw=raw)
        got = post(scorers.ingress.url + "/invocations", None, world.auth, content_type=content_type, raw=raw)
        assert got.status_code == expected.status_code, (content_type, got.text, expected.text)
        if expected.status_code == 200:
            assert json.dumps(got.json()) == json.dumps(expected.json())
        elif expected.status_code == 415:  # MLflow's text; ours the same words in MLflow's JSON error body
            assert got.json()["error_code"] == "BAD_REQUEST"
            assert expected.text.startswith(got.json()["message"].split(". ")[0]), (got.text, expected.text)
        else:
            assert got.json()["message"] == expected.json()["message"]


# -- the Open Inference Protocol, with Triton's client --------------------------------------------

def triton(world: World) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=f"127.0.0.1:{world.ingress.port}")


def test_tritonclient_health_and_metadata(world: World) -> None:
    client = triton(world)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(SERVICE, headers=world.auth)
    metadata = client.get_model_metadata(SERVICE, headers=world.auth)
    assert metadata["name"] == SERVICE and metadata["versions"] == ["V1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("F1", "FP64", [-1]), ("F2", "FP64", [-1]), ("F3", "FP64", [-1])]
    assert metadata["outputs"][0]["datatype"] == "INT64"
    proba = client.get_model_metadata(SERVICE, headers=world.auth, query_params={"method": "predict_proba"})
    assert [t["name"] for t in proba["outputs"]] == ["output_feature_0", "output_feature_1"]
    with pytest.raises(Exception, match="401|token"):
        client.get_model_metadata(SERVICE)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infer_json_and_binary_tensors(world: World, binary: bool) -> None:
    import tritonclient.http as httpclient

    client = triton(world)
    frame = world.features
    inputs = []
    for name in frame.columns:
        tensor = httpclient.InferInput(name, [len(frame)], "FP64")
        tensor.set_data_from_numpy(frame[name].to_numpy(), binary_data=binary)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput("output_feature_0", binary_data=binary)]
    result = client.infer(SERVICE, inputs, outputs=outputs, headers=world.auth, request_id="r1")
    assert result.get_response()["id"] == "r1"
    np.testing.assert_array_equal(result.as_numpy("output_feature_0"), world.model.predict(frame))
    # one [rows, 3] FP32 tensor, and another method through the parameters
    matrix = httpclient.InferInput("input__0", [len(frame), 3], "FP32")
    matrix.set_data_from_numpy(frame.to_numpy(dtype=np.float32), binary_data=binary)
    result = client.infer(SERVICE, [matrix], headers=world.auth, parameters={"method": "predict_proba"})
    expected = world.model.predict_proba(frame.to_numpy(dtype=np.float32).astype(np.float64))
    np.testing.assert_allclose(result.as_numpy("output_feature_1"), expected[:, 1], rtol=1e-6)


def test_v2_errors_are_4xx_with_a_message(world: World) -> None:
    url = world.ingress.url + f"/v2/models/{SERVICE}/infer"
    for body in ({"inputs": [{"name": "F1", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
                 {"inputs": [{"name": "F1", "shape": [2], "datatype": "FP64", "data": [1.0]}] * 3},
                 {"inputs": "x"}, {"inputs": [{"name": "F1", "shape": [1], "datatype": "FP99", "data": [1]}]}):
        answer = post(url, body, world.auth)
        assert answer.status_code == 400 and answer.json()["error"], answer.text
    unknown = post(world.ingress.url + "/v2/models/nope/infer", {"inputs": []}, world.auth)
    assert unknown.status_code == 404


# -- Snowflake's external-function contract -----------------------------------------------------

def snowflake_headers(world: World, batch: str) -> dict[str, str]:
    return {**world.auth, "sf-external-function-format": "json", "sf-external-function-format-version": "1.0",
            "sf-external-function-current-query-id": "01b2-query", "sf-external-function-query-batch-id": batch,
            "sf-external-function-name": "DOUBLE", "sf-external-function-name-base64": "RE9VQkxF",
            "sf-external-function-signature": "(X FLOAT, SECONDS FLOAT)",
            "sf-external-function-return-type": "FLOAT", "sf-context-current-user": "SOMEONE"}


def test_snowflake_headers_and_a_retried_batch_computed_once(world: World) -> None:
    body = {"data": [[0, 1.5, 0.0], [1, 2.0, 0.0]]}
    headers = snowflake_headers(world, "batch-retried-1")
    first = post(world.slow_ingress.url + "/double", body, headers)
    again = post(world.slow_ingress.url + "/double", body, headers)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json() == {"data": [[0, 3.0], [1, 4.0]]}
    assert world.slow_instance.log().count("POST /double rows=2") == 1
    wrong = post(world.slow_ingress.url + "/double", body, {**headers, "sf-external-function-format-version": "2.0"})
    assert wrong.status_code == 400 and "1.0" in wrong.json()["error"]


def test_snowflake_long_batch_answers_202_then_polls_with_get(world: World) -> None:
    headers = snowflake_headers(world, "batch-slow-1")
    accepted = post(world.slow_ingress.url + "/double", {"data": [[0, 4.0, 2.0]]}, headers)
    assert accepted.status_code == 202, accepted.text
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(world.slow_ingress.url + "/double", headers=headers).status_code == 202
        deadline = time.monotonic() + 30
        while True:
            polled = client.get(world.slow_ingress.url + "/double", headers=headers)
            if polled.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert polled.status_code == 200 and polled.json() == {"data": [[0, 8.0]]}
        unknown = client.get(world.slow_ingress.url + "/double", headers={**headers,
                                                                        "sf-external-function-query-batch-id": "none"})
        assert unknown.status_code == 404
        no_batch = client.get(world.slow_ingress.url + "/double", headers=world.auth)
        assert no_batch.status_code == 405


def test_gzip_request_bodies(world: World) -> None:
    import gzip

    body = gzip.compress(json.dumps({"data": [[0, 1.0, 0.0]]}).encode())
    answer = post(world.slow_ingress.url + "/double", None, {**world.auth, "content-encoding": "gzip"}, raw=body)
    assert answer.status_code == 200 and answer.json() == {"data": [[0, 2.0]]}, answer.text


def test_openapi_document_lists_every_route(world: World) -> None:
    with httpx.Client(trust_env=False) as client:
        document = client.get(world.ingress.url + "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path in ("/invocations", "/serving-endpoints/{endpoint}/invocations", "/v2/models/{model}/infer", "/{method}"):
        assert path in document["paths"]
    invocations = document["paths"]["/invocations"]["post"]
    assert set(invocations["requestBody"]["content"]) == {"application/json", "text/csv",
                                                          "application/vnd.apache.parquet"}
    assert "415" in invocations["responses"] and "405" in document["paths"]["/{method}"]["get"]["responses"]
