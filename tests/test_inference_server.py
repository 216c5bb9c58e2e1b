"""The inference server, started for real: ``python -m duckserve.inference_server`` on port 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from duckserve.inference_server import protocol
from duckserve.inference_server.handlers import save_package
from duckserve.model import CustomModel, ModelContext, inference_api

pytestmark = pytest.mark.xdist_group("server")

START_TIMEOUT = 60.0


class Server:
    """A running ``python -m duckserve.inference_server`` process."""

    def __init__(self, package: Path, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port_file = workdir / "port"
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "wb")
        command = [sys.executable, "-m", "duckserve.inference_server", "--package", str(package)]
        command += ["--port", "0", "--port-file", str(self.port_file), *args]
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.url = f"http://127.0.0.1:{self._wait_for_port()}"
        self.client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n--- server log ---\n{self.log()}")

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.port_file.exists():
                return int(self.port_file.read_text())
            if self.process.poll() is not None:
                self.fail(f"server exited with {self.process.returncode} before listening")
            time.sleep(0.05)
        self.fail("server did not write its port file")
        raise AssertionError  # unreachable

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            response = self.client.get("/ready")
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
            if self.process.poll() is not None:
                self.fail(f"server exited with {self.process.returncode}")
            time.sleep(0.1)
        self.fail("server never became ready")
        raise AssertionError  # unreachable

    @property
    def exchange_dir(self) -> Path:
        """The exchange directory the server names in its Arrow answers."""
        from duckserve.inference_server.manifest import Manifest

        method = Manifest.from_dict(self.client.get("/metadata").json()).methods[0]
        body = protocol.encode_arrow_request(np.zeros(0, dtype=np.int64), [[] for _ in method.inputs], method)
        response = self.client.post(f"/{method.name}", content=body,
                                    headers={"content-type": protocol.ARROW_CONTENT_TYPE})
        assert response.status_code == 200, response.text
        return Path(response.headers[protocol.EXCHANGE_HEADER])

    def post_json(self, method: str, payload: Any) -> httpx.Response:
        return self.client.post(
            f"/{method}", content=json.dumps(payload), headers={"content-type": "application/json"}
        )

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def training_data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(42)
    X = pd.DataFrame(
        rng.normal(size=(300, 4)), columns=["sepal_length", "sepal_width", "petal_length", "petal_width"]
    )
    y = ((X["sepal_length"] + X["petal_width"] - 0.3 * X["sepal_width"]) > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def classifier(training_data: tuple[pd.DataFrame, pd.Series]) -> LogisticRegression:
    X, y = training_data
    return LogisticRegression().fit(X, y)


@pytest.fixture(scope="module")
def classifier_server(
    tmp_path_factory: pytest.TempPathFactory, classifier: LogisticRegression, training_data: Any
) -> Iterator[Server]:
    X, _ = training_data
    root = tmp_path_factory.mktemp("classifier")
    save_package(classifier, root / "pkg", name="iris_clf", version="v1", sample_input=X)
    server = Server(root / "pkg", root, "--workers", "2", "--instance-id", "0")
    exchange = None
    try:
        ready = server.wait_ready()
        assert ready["ready"] is True and ready["workers_ready"] == 2
        yield server
        exchange = server.exchange_dir
    finally:
        assert server.stop() == 0, server.log()
    assert exchange is not None and not exchange.exists(), "the exchange directory outlived the server"


def rows_of(X: pd.DataFrame) -> list[list[Any]]:
    return [[i, *row] for i, row in enumerate(X.to_numpy().tolist())]


def test_ready_health_and_metadata(classifier_server: Server) -> None:
    ready = classifier_server.client.get("/ready").json()
    assert ready["model"] == "iris_clf" and ready["version"] == "v1" and ready["instance_id"] == "0"
    assert ready["methods"] == ["predict", "predict_proba", "decision_function"]
    assert classifier_server.client.get("/healthz").status_code == 200
    metadata = classifier_server.client.get("/metadata").json()
    assert metadata["handler"] == "sklearn" and metadata["methods"][0]["name"] == "predict"


def test_json_predict_matches_in_process(
    classifier_server: Server, classifier: Any, training_data: Any
) -> None:
    X, _ = training_data
    response = classifier_server.post_json("predict", {"data": rows_of(X)})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row[0] for row in data] == list(range(len(X)))
    assert [row[1] for row in data] == classifier.predict(X).tolist()


def test_predict_proba_answers_one_key_per_output(
    classifier_server: Server, classifier: Any, training_data: Any
) -> None:
    X, _ = training_data
    head = X.head(25)
    expected = classifier.predict_proba(head)
    for path in ("predict_proba", "predict-proba", "Predict-Proba"):
        response = classifier_server.post_json(path, {"data": rows_of(head)})
        assert response.status_code == 200, response.text
        results = [row[1] for row in response.json()["data"]]
        assert all(set(r) == {"output_feature_0", "output_feature_1"} for r in results)
        got = np.array([[r["output_feature_0"], r["output_feature_1"]] for r in results])
        np.testing.assert_array_equal(got, expected)


def test_seed_example_request(classifier_server: Server, classifier: Any, training_data: Any) -> None:
    X, _ = training_data
    data = {"data": np.column_stack([range(X.shape[0]), X.values]).tolist()}  # as in the seed document
    response = classifier_server.post_json("predict", data)
    assert response.status_code == 200, response.text
    assert [row[1] for row in response.json()["data"]] == classifier.predict(X).tolist()


def test_arrow_round_trip(classifier_server: Server, classifier: Any, training_data: Any) -> None:
    X, _ = training_data
    metadata = classifier_server.client.get("/metadata").json()
    from duckserve.inference_server.manifest import Manifest

    method = Manifest.from_dict(metadata).method("predict_proba")
    ids = np.arange(100, 100 + len(X))[::-1]
    body = protocol.encode_arrow_request(ids, {c: X[c].to_numpy() for c in X.columns}, method)
    response = classifier_server.client.post(
        "/predict-proba", content=body, headers={"content-type": protocol.ARROW_CONTENT_TYPE}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == protocol.ARROW_CONTENT_TYPE
    got_ids, table = protocol.decode_arrow_response(response.content, method)
    assert got_ids.tolist() == ids.tolist()
    # the server may call the estimator on a plain array (its fast path): equal to the last bits of a float
    np.testing.assert_allclose(table.to_pandas().to_numpy(), classifier.predict_proba(X), rtol=1e-12, atol=1e-15)
    assert protocol.result_array(table, method).type.num_fields == 2


def test_arrow_batches_through_exchange_files(classifier_server: Server, classifier: Any, training_data: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Same-machine callers may pass Arrow batches as files in the server's exchange directory: the
    answers are those of the HTTP body form, and the client leaves no file behind."""
    from duckserve.engine import client as client_module
    from duckserve.engine.client import ServiceClient, _exchanges
    from duckserve.inference_server.manifest import Manifest

    X, _ = training_data
    method = Manifest.from_dict(classifier_server.client.get("/metadata").json()).method("predict_proba")
    exchange = classifier_server.exchange_dir
    assert exchange.is_dir() and (exchange.stat().st_mode & 0o777) == 0o700
    ids = np.arange(len(X))
    request = protocol.arrow_request_table(ids, {c: X[c].to_numpy() for c in X.columns}, method)
    protocol.write_ipc_file(request, exchange / "batch-1.arrow")
    headers = {"content-type": protocol.ARROW_CONTENT_TYPE, protocol.BODY_FILE_HEADER: "batch-1.arrow"}
    response = classifier_server.client.post("/predict_proba", content=b"", headers=headers)
    assert response.status_code == 200, response.text
    assert response.content == b"" and response.headers[protocol.BODY_FILE_HEADER] == "batch-1.arrow.out"
    got_ids, table = protocol.decode_arrow_response(protocol.read_ipc_file(exchange / "batch-1.arrow.out", "r"), method)
    assert got_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(table.to_pandas().to_numpy(), classifier.predict_proba(X), rtol=1e-12, atol=1e-15)
    for name in ("batch-1.arrow", "batch-1.arrow.out"):
        (exchange / name).unlink()

    # the service-function client learns the directory from its first answer, then sends files
    # (for batches of any size here: by default only large ones)
    written: list[str] = []
    original = protocol.write_ipc_file

    def write_ipc_file(table: pa.Table, path: Any) -> None:
        written.append(str(path))
        original(table, path)

    monkeypatch.setattr(client_module, "EXCHANGE_MIN_BYTES", 0)
    monkeypatch.setattr(client_module.protocol, "write_ipc_file", write_ipc_file)
    _exchanges.pop(classifier_server.url, None)
    client = ServiceClient("iris", method, lambda: [classifier_server.url], parallelism=2, batch_rows=40)
    columns = [pa.array(X[c].to_numpy()) for c in X.columns]
    first = client.call(columns)
    assert _exchanges[classifier_server.url] == str(exchange)
    second = client.call(columns)
    assert len(written) >= 4 and all(Path(w).parent == exchange for w in written)
    expected = classifier.predict_proba(X)
    for answers in (first, second):
        assert np.allclose(np.array([[row["output_feature_0"], row["output_feature_1"]] for row in answers.to_pylist()]),
                           expected, rtol=1e-12)
    assert list(exchange.iterdir()) == [], "the client left files in the exchange directory"
    assert "rows=40 status=200" in classifier_server.log()


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("../../etc/passwd", b"", "is not a file name of the exchange directory"),
        (".hidden", b"", "is not a file name of the exchange directory"),
        ("missing.arrow", b"", "request body file missing.arrow does not exist"),
        ("batch.arrow", b"a body too", "needs content type application/vnd.apache.arrow.stream and an empty body"),
    ],
)
def test_bad_exchange_requests_are_400(classifier_server: Server, name: str, body: bytes, message: str) -> None:
    headers = {"content-type": protocol.ARROW_CONTENT_TYPE, protocol.BODY_FILE_HEADER: name}
    response = classifier_server.client.post("/predict", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("this is not json", "not valid JSON"),
        (json.dumps({"rows": [[0, 1, 2, 3, 4]]}), 'must be a JSON object {"data"'),
        (json.dumps({"data": [[0, 1.0, 2.0, 3.0, 4.0], "row"]}), r"data[1] is str 'row', not a list"),
        (
            json.dumps({"data": [[0, 1.0, 2.0]]}),
            "data[0] has 3 values, expected 5: [row_index, sepal_length, sepal_width, petal_length, petal_width]",
        ),
        (
            json.dumps({"data": [[0, 1.0, "wide", 3.0, 4.0]]}),
            "argument sepal_width (position 2) expects DOUBLE, got 'wide'",
        ),
        (
            json.dumps({"data": [[7, 1.0, 2.0, 3.0, 4.0], [7, 1.0, 2.0, 3.0, 4.0]]}),
            "row index 7 appears more than once",
        ),
        (json.dumps({"data": [[None, 1.0, 2.0, 3.0, 4.0]]}), "data[0] has no row index"),
    ],
)
def test_malformed_input_is_400(classifier_server: Server, body: str, message: str) -> None:
    response = classifier_server.client.post(
        "/predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_arrow_without_row_ids_is_400(classifier_server: Server) -> None:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    table = pa.table({"sepal_length": [1.0]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    response = classifier_server.client.post(
        "/predict",
        content=sink.getvalue().to_pybytes(),
        headers={"content-type": protocol.ARROW_CONTENT_TYPE},
    )
    assert response.status_code == 400 and "_ID" in response.json()["error"]


def test_unknown_method_is_404(classifier_server: Server) -> None:
    response = classifier_server.post_json("explain", {"data": []})
    assert response.status_code == 404
    assert "no method 'explain'" in response.json()["error"]
    assert "predict, predict_proba, decision_function" in response.json()["error"]


def test_empty_batch(classifier_server: Server) -> None:
    response = classifier_server.post_json("predict", {"data": []})
    assert response.status_code == 200 and response.json() == {"data": []}


def test_regression_pipeline_from_numpy_sample(tmp_path: Path, training_data: Any) -> None:
    X, _ = training_data
    features = X.to_numpy()
    target = features @ np.array([0.5, -1.0, 2.0, 0.25]) + 1.0
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(features, target)
    save_package(model, tmp_path / "pkg", name="demand", version="v3", sample_input=features[:20])
    server = Server(tmp_path / "pkg", tmp_path, "--workers", "1")
    try:
        server.wait_ready()
        response = server.post_json("predict", {"data": rows_of(X)})
        assert response.status_code == 200, response.text
        assert [row[1] for row in response.json()["data"]] == model.predict(features).tolist()
    finally:
        assert server.stop() == 0, server.log()


# -------------------------------------------------------------------------------------------------
# custom models: artifacts, slow loads, overload, timeouts, model errors


class Tariff(CustomModel):
    """price = quantity * rate (from its artifact); ``seconds`` makes a call sleep; ``fail`` raises."""

    def __init__(self, context: ModelContext | None = None) -> None:
        super().__init__(context)
        import json as _json
        import os as _os
        import time as _time

        with open(self.context.path("rates")) as f:
            self.rate = _json.load(f)["rate"]
        _time.sleep(float(_os.environ.get("TARIFF_LOAD_SECONDS", "0")))

    @inference_api
    def price(self, df: pd.DataFrame) -> pd.DataFrame:
        import time as _time

        if (df["seconds"] > 0).any():
            _time.sleep(float(df["seconds"].max()))
        if (df["quantity"] < 0).any():
            raise ValueError("quantity must not be negative")
        return pd.DataFrame({"price": df["quantity"] * self.rate, "label": "q" + df["quantity"].astype(str)})


@pytest.fixture(scope="module")
def tariff_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tariff")
    (root / "rates.json").write_text(json.dumps({"rate": 2.5}))
    model = Tariff(ModelContext(artifacts={"rates": str(root / "rates.json")}))
    sample = pd.DataFrame({"quantity": [1, 2], "seconds": [0.0, 0.0]})
    save_package(model, root / "pkg", name="tariff", version="v1", sample_input=sample)
    return root / "pkg"


def test_custom_model_slow_load_overload_and_errors(tariff_package: Path, tmp_path: Path) -> None:
    server = Server(
        tariff_package, tmp_path, "--workers", "1", "--max-queue", "1", env={"TARIFF_LOAD_SECONDS": "2"}
    )
    try:
        loading = server.client.get("/ready")
        assert loading.status_code == 503, loading.text
        assert loading.json()["loading"] is True and loading.json()["model"] == "tariff"
        # a request that arrives while the model loads waits for it
        early = server.post_json("price", {"data": [[0, 4, 0.0]]})
        assert early.status_code == 200, early.text
        assert early.json() == {"data": [[0, {"price": 10.0, "label": "q4"}]]}
        server.wait_ready()

        failed = server.post_json("price", {"data": [[0, -1, 0.0]]})
        assert failed.status_code == 500
        assert failed.json()["error"] == "method price raised ValueError: quantity must not be negative"

        responses: list[httpx.Response] = []
        lock = threading.Lock()

        def call(index: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as client:
                response = client.post(
                    "/price",
                    content=json.dumps({"data": [[index, index, 1.0]]}),
                    headers={"content-type": "application/json"},
                )
            with lock:
                responses.append(response)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(accepted) + len(refused) == 6, [r.status_code for r in responses]
        assert accepted and refused, server.log()
        assert all(r.headers["retry-after"] == "1" and "server busy" in r.json()["error"] for r in refused)
        for response in accepted:
            [[index, result]] = response.json()["data"]
            assert result == {"price": index * 2.5, "label": f"q{index}"}
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "model tariff version v1 loaded in" in log
    assert "price rows=1 status=429" in log and "Traceback" in log


def test_request_timeout_is_504(tariff_package: Path, tmp_path: Path) -> None:
    server = Server(tariff_package, tmp_path, "--workers", "1", "--request-timeout", "0.3")
    try:
        server.wait_ready()
        response = server.post_json("price", {"data": [[0, 1, 1.0]]})
        assert response.status_code == 504
        assert "request timed out after 0.3 s (the model call still running)" in response.json()["error"]
        time.sleep(1.0)  # the abandoned call finishes; the worker serves again
        fast = server.post_json("price", {"data": [[0, 1, 0.0]]})
        assert fast.status_code == 200, fast.text

        # through an exchange file: the answer of a call that timed out is never written
        from duckserve.inference_server.manifest import Manifest

        method = Manifest.read(tariff_package).method("price")
        exchange = server.exchange_dir
        request = protocol.arrow_request_table(np.array([0]), {"quantity": [1], "seconds": [1.0]}, method)
        protocol.write_ipc_file(request, exchange / "slow.arrow")
        response = server.client.post("/price", content=b"", headers={
            "content-type": protocol.ARROW_CONTENT_TYPE, protocol.BODY_FILE_HEADER: "slow.arrow"})
        assert response.status_code == 504, response.text
        time.sleep(1.2)
        assert sorted(p.name for p in exchange.iterdir()) == ["slow.arrow"]
    finally:
        assert server.stop() == 0, server.log()


def test_sweep_removes_only_old_exchange_files(tmp_path: Path) -> None:
    from duckserve.inference_server.app import sweep_exchange_dir

    old, new = tmp_path / "old.arrow.out", tmp_path / "new.arrow"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 400, time.time() - 400))
    assert sweep_exchange_dir(tmp_path, max_age=360) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.arrow"]


def test_idle_timeout_exits_cleanly(tariff_package: Path, tmp_path: Path) -> None:
    server = Server(tariff_package, tmp_path, "--workers", "2", "--idle-timeout", "1.5")
    try:
        server.wait_ready()
        assert server.post_json("price", {"data": [[0, 2, 0.0]]}).status_code == 200
        server.process.wait(timeout=30)
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "idle timeout 1.5 s): shutting down" in server.log()
    assert not server.port_file.exists()


def test_workers_are_forked_after_preloading_and_replaced_when_they_die(tariff_package: Path, tmp_path: Path) -> None:
    import signal

    server = Server(tariff_package, tmp_path, "--workers", "2")
    try:
        server.wait_ready()
        assert "preloaded duckserve.inference_server.app" in server.log()
        pids = {server.client.get("/healthz").json()["pid"] for _ in range(20)}
        assert server.process.pid not in pids  # workers answer, the supervisor does not
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + START_TIMEOUT
        while f"worker {victim} exited with -9: starting another" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        ready = server.wait_ready()
        assert ready["workers_ready"] == 2
        assert server.post_json("price", {"data": [[0, 2, 0.0]]}).json() == {"data": [[0, {"price": 5.0, "label": "q2"}]]}
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "worker" in server.log() and "did not stop" not in server.log()


def test_broken_package_fails_at_startup(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "manifest.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "-m", "duckserve.inference_server", "--package", str(tmp_path / "pkg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "manifest.json is not a valid manifest (KeyError: 'methods')" in result.stderr
