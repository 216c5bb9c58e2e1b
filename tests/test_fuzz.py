"""No 5xx and no crash from bad input: hypothesis feeds the request decoders arbitrary bytes and
arbitrary JSON in each protocol's shape (in process: thousands of cases in seconds), and
schemathesis drives a real ingress, in front of a real instance, from its own OpenAPI document.

Sizes are kept small so the whole module stays within a few tens of seconds: DECODER_EXAMPLES
cases per decoder, SCHEMA_EXAMPLES generated requests per operation of the OpenAPI document.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from duckserve.engine import access as A
from duckserve.engine import tokens as T
from duckserve.engine.account import Account
from duckserve.engine.catalog import CatalogObject
from duckserve.inference_server import open_inference, scoring
from duckserve.inference_server.errors import ServerError
from duckserve.inference_server.handlers.custom import checked_params, keyword_parameters
from duckserve.inference_server.http_messages import ChunkedBody, Limits, ProtocolViolation, parse_head
from duckserve.inference_server.manifest import FeatureSpec, Manifest, MethodSpec
from duckserve.inference_server.protocol import decode_json_inputs
from tests.servers import Server, start_inference_server, start_ingress

DECODER_EXAMPLES = 300
SCHEMA_EXAMPLES = 30

METHOD = MethodSpec("predict", [FeatureSpec("F1", "DOUBLE"), FeatureSpec("N", "INT32"), FeatureSpec("S", "STRING"),
                                FeatureSpec("B", "BOOL"), FeatureSpec("V", "FLOAT", [3])],
                    [FeatureSpec("output_feature_0", "DOUBLE")])
NUMERIC = MethodSpec("predict", [FeatureSpec("F1", "DOUBLE"), FeatureSpec("F2", "DOUBLE")],
                     [FeatureSpec("output_feature_0", "DOUBLE")])
MANIFEST = Manifest("M", "V1", "sklearn", [NUMERIC, METHOD], "3.11")

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=5), children, max_size=4), max_leaves=20)
rows = st.lists(st.lists(values, max_size=7), max_size=5)


def only_client_errors(call: Any) -> None:
    """The decoder either decodes or raises one of the server's 4xx errors."""
    try:
        call()
    except ServerError as exc:
        assert 400 <= exc.status_code < 500, exc


fuzz = settings(max_examples=DECODER_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(st.one_of(st.binary(max_size=200), values.map(lambda v: json.dumps(v).encode()),
                 rows.map(lambda r: json.dumps({"data": r}).encode())))
def test_service_function_decoder(body: bytes) -> None:
    for method in (METHOD, NUMERIC):
        only_client_errors(lambda: decode_json_inputs(body, method).__len__())  # noqa: B023


formats = st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "params", "other"])


#: MLflow's server reads JSON with Python's json: NaN and infinities are numbers there
nan_scalars = st.one_of(scalars, st.floats())
nan_values = st.recursive(nan_scalars, lambda children: st.lists(children, max_size=4)
                          | st.dictionaries(st.text(max_size=5), children, max_size=4), max_leaves=20)


@fuzz
@given(st.dictionaries(formats, nan_values, max_size=3),
       st.sampled_from(["application/json", "text/csv", None, "application/json; charset=latin-1", "x/y",
                        "application/vnd.apache.parquet", "application/json; foo=bar", "text/csv; charset=utf-8"]),
       st.binary(max_size=100))
def test_mlflow_decoder(payload: dict[str, Any], content_type: str | None, junk: bytes) -> None:
    for body in (json.dumps(payload).encode(), junk):
        for method in (METHOD, NUMERIC):
            only_client_errors(lambda: len(scoring.decode_invocation(body, content_type, method)[0]))  # noqa: B023


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["F1", "F2", "N", "x"]), st.lists(nan_scalars, min_size=1, max_size=4),
                       min_size=1, max_size=3), st.data())
def test_mlflow_parquet_decoder(columns: dict[str, list[Any]], data: Any) -> None:
    """Parquet files of arbitrary columns, whole and cut short."""
    import io

    width = min(len(v) for v in columns.values())
    try:
        frame = pd.DataFrame({name: values[:width] for name, values in columns.items()})
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
    except Exception:  # mixed types pyarrow cannot write: nothing to decode
        return
    body = buffer.getvalue()
    cut = data.draw(st.integers(min_value=0, max_value=len(body)))
    for raw in (body, body[:cut]):
        for method in (METHOD, NUMERIC):
            decode = scoring.decode_invocation
            only_client_errors(lambda: len(decode(raw, scoring.PARQUET_CONTENT_TYPE, method)[0]))  # noqa: B023


class WithParams:
    def predict(self, df: Any, *, scale: float = 1.0, n: int = 0, label: str = "a", flag: bool = False,
                anything: Any = None) -> Any:
        return df


@fuzz
@given(nan_values)
def test_custom_model_params_checker(params: Any) -> None:
    """Any ``params`` value: keyword arguments of the right types, or a 400."""
    accepted = keyword_parameters(WithParams().predict)
    try:
        chosen = checked_params(params, accepted)
    except ServerError as exc:
        assert exc.status_code == 400, exc
        return
    assert set(chosen) <= set(accepted)
    for name, kind in (("scale", float), ("n", int), ("label", str), ("flag", bool)):
        assert name not in chosen or type(chosen[name]) is kind, chosen


def _tensor() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "name": st.sampled_from(["F1", "F2", "N", "S", "B", "V", "input__0", "x"]),
        "shape": st.lists(st.integers(min_value=-1, max_value=5), max_size=3),
        "datatype": st.sampled_from(["FP64", "FP32", "INT32", "BOOL", "BYTES", "UINT8", "FP99"]),
    }, optional={"data": values, "parameters": st.fixed_dictionaries({}, optional={
        "binary_data_size": st.integers(min_value=-1, max_value=64)})})


@fuzz
@given(st.fixed_dictionaries({}, optional={"inputs": st.lists(_tensor(), max_size=4), "id": values,
                                           "parameters": st.dictionaries(st.sampled_from(["method", "binary_data_output"]),
                                                                         values),
                                           "outputs": st.lists(st.dictionaries(st.sampled_from(["name", "parameters"]),
                                                                               values), max_size=2)}),
       st.binary(max_size=64), st.booleans())
def test_open_inference_decoder(payload: dict[str, Any], binary: bytes, with_length: bool) -> None:
    head = json.dumps(payload).encode()
    length = str(len(head)) if with_length else None
    only_client_errors(lambda: open_inference.decode_infer(head + binary, length, MANIFEST).inputs.__len__())
    only_client_errors(lambda: open_inference.decode_infer(binary, "7", MANIFEST))


@fuzz
@given(st.binary(max_size=300), st.lists(st.sampled_from([b"GET", b"POST", b"/x", b" ", b"\r\n", b":", b"HTTP/1.1",
                                                           b"content-length", b"transfer-encoding", b"chunked", b"9",
                                                           b"-1", b"\t", b"\x00"]), max_size=30))
def test_http_head_and_chunked_decoders(raw: bytes, tokens: list[bytes]) -> None:
    for head in (raw, b"".join(tokens)):
        try:
            parse_head(head, Limits())
        except ProtocolViolation as exc:
            assert 400 <= exc.status < 600 and exc.status != 500
        chunked = ChunkedBody(1000)
        try:
            chunked.feed(bytearray(head))
        except ProtocolViolation as exc:
            assert exc.status in (400, 413)


# -- schemathesis against a real ingress ---------------------------------------------------------

KEY = "DUCKSERVE.PUBLIC.FUZZED"


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    from sklearn.linear_model import LogisticRegression

    from duckserve.inference_server.handlers import save_package

    base: Path = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(5)
    features = pd.DataFrame(rng.normal(size=(30, 2)), columns=["F1", "F2"])
    model = LogisticRegression().fit(features, (features["F1"] > 0).astype(int))
    save_package(model, base / "package", name="FUZZED", version="V1", sample_input=features.head(5))
    account = Account(base / "home")
    secret = str(T.add_token(account, account.open_session(), "ADMIN", "FUZZ").rows[0][1])
    instance = start_inference_server(base / "package", base / "run", "instance", service=KEY,
                                      extra=["--max-queue", "64"])
    account.catalog.insert(CatalogObject(A.SERVICE, "FUZZED", owner=A.ACCOUNTADMIN, database="DUCKSERVE",
                                         schema="PUBLIC", props={"status": "RUNNING", "functions": [
                                             "predict", "predict_proba", "decision_function"], "instances": [
                                             {"instance_id": 0, "handle": {"port": instance.port}}]}))
    server = start_ingress(base / "home", KEY, base / "run", extra=["--async-after", "5"])
    try:
        yield server, secret
    finally:
        server.stop()
        instance.stop()


@pytest.mark.xdist_group("server")
def test_the_ingress_from_its_openapi_document(ingress: tuple[Server, str]) -> None:
    """Every operation of the document, SCHEMA_EXAMPLES generated requests each (valid and invalid
    bodies, parameters and headers): never a 5xx, never a dropped connection, and every answer as
    the document says (status, content type, body schema). Not checked: that a schema-valid body is
    accepted, since the document cannot state the model's signature (a string for a DOUBLE is 400)."""
    from schemathesis import checks

    server, secret = ingress
    document = schemathesis.openapi.from_url(server.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {secret}"}
    calls: list[str] = []
    for result in document.get_all_operations():
        operation = result.ok()

        @settings(max_examples=SCHEMA_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call(headers=headers, timeout=30)
            calls.append(f"{case.method} {case.formatted_path} {response.status_code}")
            case.validate_response(response, checks=[checks.not_a_server_error, checks.status_code_conformance,
                                                     checks.content_type_conformance,
                                                     checks.response_schema_conformance])
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} " \
                                                f"{response.text[:500]}\n{server.log()[-2000:]}"
            if response.status_code >= 400:
                assert response.json().get("error") or response.json().get("message"), response.text

        call()
    assert len(calls) >= 10 * len(list(document.get_all_operations()))
    print(f"schemathesis: {len(calls)} requests; statuses {sorted(Counter(c.rsplit(' ', 1)[1] for c in calls).items())}")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(min_value=1, max_value=6), st.data(), st.sampled_from([(",", ":"), (", ", ": "), (",\n ", ":")]),
       st.integers(min_value=0, max_value=10_000))
def test_the_large_batch_parser_reads_what_json_reads(width: int, data: Any, separators: tuple[str, str],
                                                       mutate: int) -> None:
    from duckserve.inference_server.decoding import split_matrix

    numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**53, 2**53))
    row = data.draw(st.lists(numbers, min_size=width, max_size=width))
    rows = [row] * (2000 // width) + data.draw(st.lists(st.lists(numbers, min_size=width, max_size=width), max_size=5))
    body = bytearray(json.dumps({"data": rows}, separators=separators).encode())
    if mutate < len(body) and mutate % 3 == 0:
        body[mutate] = data.draw(st.sampled_from(b'0.-e,[] "n1'))
    try:
        expected = json.loads(bytes(body))
    except ValueError:
        return  # not JSON: the caller's json parse of the rest refuses it, or the whole body
    split = split_matrix(bytes(body), b"data", width)
    if split is None or not isinstance(expected, dict) or not isinstance(expected.get("data"), list):
        return
    rest, block = split
    assert json.loads(rest) == {**expected, "data": []}
    np.testing.assert_array_equal(block, np.array(expected["data"], dtype=np.float64))
