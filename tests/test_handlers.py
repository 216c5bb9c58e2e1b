"""Model handlers, signatures and the protocol codecs, in process (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from duckserve.inference_server import protocol
from duckserve.inference_server.errors import ModelError, ProtocolError
from duckserve.inference_server.handlers import get_handler, handler_for, load_package, save_package
from duckserve.inference_server.handlers.custom import CustomModelHandler
from duckserve.inference_server.handlers.sklearn import SklearnHandler
from duckserve.inference_server.manifest import FeatureSpec, Manifest, MethodSpec
from duckserve.model import CustomModel, ModelContext, inference_api


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["f1", "f2", "f3"])
    y = (X["f1"] - 0.5 * X["f3"] > 0).astype(int)
    return X, y


class Scaler(CustomModel):
    """Multiplies by the factor in its JSON artifact and adds the sub-model's prediction."""

    def __init__(self, context: ModelContext | None = None) -> None:
        super().__init__(context)
        with open(self.context.path("config")) as f:
            self.factor = json.load(f)["factor"]

    @inference_api
    def scale(self, df: pd.DataFrame) -> pd.DataFrame:
        base = self.context.model_ref("regressor").predict(df[["x"]].to_numpy())
        return pd.DataFrame({"scaled": df["x"] * self.factor + base, "label": df["name"].str.upper()})

    def helper(self) -> None:
        """Not an inference method."""


def test_handler_for_picks_by_kind_and_refuses_others(data: tuple[pd.DataFrame, pd.Series]) -> None:
    X, y = data
    assert handler_for(LogisticRegression().fit(X, y)) is SklearnHandler
    assert handler_for(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)) is SklearnHandler
    assert get_handler("sklearn") is SklearnHandler and get_handler("custom") is CustomModelHandler
    with pytest.raises(TypeError, match=r"builtins\.dict.*CustomModel.*scikit-learn"):
        handler_for({"not": "a model"})
    with pytest.raises(TypeError, match="LogisticRegression"):
        handler_for(LogisticRegression)  # the class, not an estimator
    assert not SklearnHandler.can_handle(Scaler)
    with pytest.raises(TypeError, match="not a scikit-learn estimator"):
        SklearnHandler.save(object(), Path("unused"))
    with pytest.raises(KeyError, match="known handlers"):
        get_handler("tensorflow")


def test_unfitted_estimator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not fitted"):
        SklearnHandler.save(LogisticRegression(), tmp_path)


def test_sklearn_signatures_and_round_trip(tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]) -> None:
    X, y = data
    model = LogisticRegression().fit(X, y)
    assert SklearnHandler.default_methods(model) == ["predict", "predict_proba", "decision_function"]
    manifest = save_package(model, tmp_path / "pkg", name="clf", version="v1", sample_input=X)
    predict = manifest.method("predict")
    assert [(f.name, f.dtype) for f in predict.inputs] == [
        ("f1", "DOUBLE"),
        ("f2", "DOUBLE"),
        ("f3", "DOUBLE"),
    ]
    assert [(f.name, f.dtype) for f in predict.outputs] == [("output_feature_0", "INT64")]
    proba = manifest.method("predict-proba")
    assert [f.name for f in proba.outputs] == ["output_feature_0", "output_feature_1"]
    conda, pip = SklearnHandler.default_dependencies(model)
    import sklearn

    assert conda == [f"scikit-learn=={sklearn.__version__}"] and pip == []
    assert manifest.conda_dependencies == conda

    loaded_manifest, loaded = load_package(tmp_path / "pkg")
    assert loaded_manifest == Manifest.read(tmp_path / "pkg")
    # columns by name, any case, extra columns ignored, any order
    shuffled = X.head(20)[["f3", "f1", "f2"]].rename(columns={"f1": "F1"}).assign(extra=1)
    out = loaded.call("predict", shuffled)
    assert list(out.columns) == ["output_feature_0"]
    assert out["output_feature_0"].tolist() == model.predict(X.head(20)).tolist()
    probabilities = loaded.call("PREDICT_PROBA", X.head(5))
    np.testing.assert_array_equal(probabilities.to_numpy(), model.predict_proba(X.head(5)))
    with pytest.raises(ProtocolError, match="no column f2"):
        loaded.call("predict", X[["f1", "f3"]])
    assert len(loaded.call("predict", X.head(0))) == 0


def test_numpy_sample_names_inputs_by_position(tmp_path: Path, data: tuple[pd.DataFrame, pd.Series]) -> None:
    X, _ = data
    target = X.to_numpy() @ np.array([1.0, -2.0, 0.5]) + 3.0
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(X.to_numpy(), target)
    manifest = save_package(model, tmp_path / "pkg", name="reg", version="v1", sample_input=X.to_numpy())
    spec = manifest.method("predict")
    assert [f.name for f in spec.inputs] == ["input_feature_0", "input_feature_1", "input_feature_2"]
    assert [(f.name, f.dtype) for f in spec.outputs] == [("output_feature_0", "DOUBLE")]
    _, loaded = load_package(tmp_path / "pkg")
    frame = pd.DataFrame(X.to_numpy()[:7], columns=[f.name for f in spec.inputs])
    np.testing.assert_array_equal(
        loaded.call("predict", frame)["output_feature_0"], model.predict(X.to_numpy()[:7])
    )


def test_list_of_strings_is_one_string_column(tmp_path: Path) -> None:
    texts = ["good movie", "bad movie", "great film", "awful film", "good film", "bad acting"]
    labels = [1, 0, 1, 0, 1, 0]
    model = make_pipeline(CountVectorizer(), LogisticRegression()).fit(texts, labels)
    manifest = save_package(model, tmp_path / "pkg", name="text", version="v1", sample_input=texts)
    spec = manifest.method("predict")
    assert [(f.name, f.dtype) for f in spec.inputs] == [("input_feature_0", "STRING")]
    _, loaded = load_package(tmp_path / "pkg")
    out = loaded.call("predict", pd.DataFrame({"input_feature_0": ["good film", "awful movie"]}))
    assert out["output_feature_0"].tolist() == model.predict(["good film", "awful movie"]).tolist()


def test_nullable_sample_dtypes() -> None:
    sample = pd.DataFrame(
        {
            "count": pd.array([1, None, 3], dtype="Int64"),
            "small": np.array([1, 2, 3], dtype=np.int8),
            "ratio": pd.array([0.5, None, 1.5], dtype="Float64"),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "name": pd.array(["a", None, "c"], dtype="string"),
            "when": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
            "vec": [np.zeros(4, dtype=np.float32)] * 3,
        }
    )

    class Identity(CustomModel):
        @inference_api
        def echo(self, df: pd.DataFrame) -> pd.DataFrame:
            return df

    spec = CustomModelHandler.infer_signature(Identity(), "echo", sample)
    expected = [
        ("count", "INT64", None),
        ("small", "INT8", None),
        ("ratio", "DOUBLE", None),
        ("flag", "BOOL", None),
        ("name", "STRING", None),
        ("when", "TIMESTAMP_NTZ", None),
        ("vec", "FLOAT", [4]),
    ]
    assert [(f.name, f.dtype, f.shape) for f in spec.inputs] == expected
    assert [(f.name, f.dtype, f.shape) for f in spec.outputs] == expected


def test_custom_model_artifacts_and_sub_models(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"factor": 3.0}))
    regressor = LinearRegression().fit(np.array([[0.0], [1.0]]), np.array([1.0, 3.0]))
    model = Scaler(ModelContext(artifacts={"config": str(config)}, models={"regressor": regressor}))
    assert Scaler.inference_methods() == ["scale"]
    sample = pd.DataFrame({"x": [1.0, 2.0], "name": ["a", "b"]})
    manifest = save_package(model, tmp_path / "pkg", name="scaler", version="v2", sample_input=sample)
    assert manifest.handler == "custom"
    assert manifest.artifacts == {"config": "model/artifacts/config/config.json"}
    assert (tmp_path / "pkg" / "model" / "artifacts" / "config" / "config.json").is_file()
    spec = manifest.method("scale")
    assert [(f.name, f.dtype) for f in spec.outputs] == [("scaled", "DOUBLE"), ("label", "STRING")]
    assert any(r.startswith("scikit-learn==") for r in manifest.conda_dependencies)
    assert any(r.startswith("cloudpickle==") for r in manifest.conda_dependencies)

    config.unlink()  # the package must not depend on the original file
    _, loaded = load_package(tmp_path / "pkg")
    assert loaded.model.context.path("config") == str(
        tmp_path / "pkg" / "model" / "artifacts" / "config" / "config.json"
    )
    out = loaded.call("scale", pd.DataFrame({"x": [2.0, 0.0], "name": ["x", "yz"]}))
    base = regressor.predict(np.array([[2.0], [0.0]]))
    assert out.to_dict("list") == {"scaled": [2.0 * 3.0 + base[0], base[1]], "label": ["X", "YZ"]}


def test_model_context_forms(tmp_path: Path) -> None:
    context = ModelContext(weights=str(tmp_path / "w.bin"), clf=LogisticRegression())
    assert context.path("weights") == str(tmp_path / "w.bin") == context["weights"]
    assert isinstance(context.model_ref("clf"), LogisticRegression)
    with pytest.raises(KeyError, match="no artifact 'missing'"):
        context.path("missing")
    assert CustomModel().context.artifacts == {}


def test_custom_model_must_rebuild_from_its_context(tmp_path: Path) -> None:
    class NeedsMore(CustomModel):
        def __init__(self, context: ModelContext, threshold: float) -> None:
            super().__init__(context)
            self.threshold = threshold

        @inference_api
        def predict(self, df: pd.DataFrame) -> pd.DataFrame:
            return df

    with pytest.raises(TypeError, match="only required argument"):
        CustomModelHandler.save(NeedsMore(ModelContext(), 0.5), tmp_path)


def test_outputs_must_fit_the_signature() -> None:
    spec = MethodSpec("m", [FeatureSpec("x", "DOUBLE")], [FeatureSpec("y", "INT64")])
    with pytest.raises(ModelError, match="INT64, got 1.5"):
        protocol.encode_json_response(np.array([0]), pd.DataFrame({"y": [1.5]}), spec)
    with pytest.raises(ModelError, match="2 rows for 1 input rows"):
        protocol.encode_json_response(np.array([0]), pd.DataFrame({"y": [1, 2]}), spec)


def test_json_codec_missing_values_and_client_mirror() -> None:
    spec = MethodSpec(
        "m",
        [FeatureSpec("n", "INT32"), FeatureSpec("s", "STRING")],
        [FeatureSpec("a", "DOUBLE"), FeatureSpec("v", "FLOAT", [2])],
    )
    body = protocol.encode_json_request([10, 11], [[1, None], ["x", None]])
    ids, frame = protocol.decode_json_request(body, spec)
    assert ids.tolist() == [10, 11]
    assert str(frame["n"].dtype) == "Int32" and frame["n"].isna().tolist() == [False, True]
    assert frame["s"].tolist() == ["x", None]
    out = pd.DataFrame({"a": [np.nan, 2.5], "v": [np.array([1.0, np.nan]), None]})
    response = protocol.encode_json_response(ids, out, spec)
    assert json.loads(response) == {
        "data": [[10, {"a": None, "v": [1.0, None]}], [11, {"a": 2.5, "v": None}]]
    }
    got_ids, table = protocol.decode_json_response(response, spec)
    assert got_ids.tolist() == [10, 11]
    assert protocol.result_array(table, spec).to_pylist() == [
        {"a": None, "v": [1.0, None]},
        {"a": 2.5, "v": None},
    ]


def test_arrow_codec_round_trip() -> None:
    spec = MethodSpec(
        "m", [FeatureSpec("x", "DOUBLE"), FeatureSpec("k", "INT64")], [FeatureSpec("y", "DOUBLE")]
    )
    body = protocol.encode_arrow_request([3, 1, 2], [[0.5, None, 2.0], [1, 2, 3]], spec)
    ids, frame = protocol.decode_arrow_request(body, spec)
    assert ids.tolist() == [3, 1, 2]
    assert frame["k"].tolist() == [1, 2, 3] and np.isnan(frame["x"][1])
    response = protocol.encode_arrow_response(ids, pd.DataFrame({"y": frame["x"] * 2}), spec)
    got_ids, table = protocol.decode_arrow_response(response, spec)
    assert got_ids.tolist() == [3, 1, 2]
    assert table.column("y").to_pylist() == [1.0, None, 4.0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"rows": []}', "must be a JSON object"),
        (b'{"data": [[0, 1.0, 2], 7]}', r"data\[1\] is int 7, not a list \[row_index, x, k\]"),
        (b'{"data": [[0, 1.0]]}', r"data\[0\] has 2 values, expected 3: \[row_index, x, k\]"),
        (b'{"data": [[0, "a", 1]]}', "argument x \\(position 1\\) expects DOUBLE, got 'a'"),
        (b'{"data": [[0, 1.0, 1.5]]}', "argument k \\(position 2\\) expects INT64, got 1.5"),
        (b'{"data": [[0, 1.0, true]]}', "expects INT64, got True"),
        (b'{"data": [[0, 1.0, 1], [0, 2.0, 2]]}', "row index 0 appears more than once"),
        (b'{"data": [[null, 1.0, 1]]}', "has no row index"),
        (b'{"data": [["a", 1.0, 1]]}', "row index must be an integer"),
    ],
)
def test_json_request_errors(body: bytes, message: str) -> None:
    spec = MethodSpec(
        "m", [FeatureSpec("x", "DOUBLE"), FeatureSpec("k", "INT64")], [FeatureSpec("y", "DOUBLE")]
    )
    with pytest.raises(ProtocolError, match=message):
        protocol.decode_json_request(body, spec)


def test_snowflake_style_float_row_indexes() -> None:
    spec = MethodSpec("m", [FeatureSpec("x", "DOUBLE")], [FeatureSpec("y", "DOUBLE")])
    rows = np.column_stack([range(3), [0.5, 1.5, 2.5]]).tolist()  # the seed's example: indexes become floats
    ids, frame = protocol.decode_json_request(json.dumps({"data": rows}), spec)
    assert ids.tolist() == [0, 1, 2] and frame["x"].tolist() == [0.5, 1.5, 2.5]
