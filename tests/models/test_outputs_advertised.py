"""What is advertised is what is returned (issue 14 point 12), in-process through the runtime's Flask app.

Real models trained here (sklearn on iris, LightGBM on a binary task), uploaded to a real
directory store with a signature in the manifest, served by the real templates through
``create_app`` and Flask's test client. A router's V2 metadata is read from a real router
replica app (its stages are never called: metadata needs none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hydro_serving.store import open_store

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
WINE_SIGNATURE = {
    "inputs": [{"name": f, "dtype": "float64", "shape": [-1]} for f in FEATURES],
    "outputs": [{"name": "cultivar", "dtype": "int64", "shape": [-1]},
                {"name": "probability", "dtype": "float64", "shape": [-1, 3]}],
}



def _v2(rows: list[list[float]]) -> dict[str, Any]:
    data = [v for row in rows for v in row]
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [len(rows), 4], "data": data}]}


def _agree(meta: dict[str, Any], infer: dict[str, Any]) -> None:
    """Names and datatypes equal, in order; each shape fits the advertised one (-1 is any size)."""
    named = [(o["name"], o["datatype"]) for o in meta["outputs"]]
    assert [(o["name"], o["datatype"]) for o in infer["outputs"]] == named
    for advertised, returned in zip(meta["outputs"], infer["outputs"], strict=True):
        assert len(advertised["shape"]) == len(returned["shape"]), (advertised, returned)
        assert all(a in (-1, r) for a, r in zip(advertised["shape"], returned["shape"], strict=True))


def test_declared_outputs_are_the_answer_of_invoke_and_v2_infer(serve: Any, iris_model_file: Path) -> None:
    store = open_store()
    store.upload(iris_model_file, "wine", signature=WINE_SIGNATURE)
    client = serve({"name": "wine", "lang": "sklearn", "model": "wine:1"})

    answer = client.post("/", json=ROWS).get_json()
    assert [row["cultivar"] for row in answer] == [0, 2], answer
    assert all(set(row) == {"cultivar", "probability"} and len(row["probability"]) == 3
               and abs(sum(row["probability"]) - 1) < 1e-9 for row in answer)

    meta = client.get("/v2/models/wine").get_json()
    assert meta["versions"] == ["1"]
    assert [o["name"] for o in meta["outputs"]] == ["cultivar", "probability"]
    infer = client.post("/v2/models/wine/infer", json=_v2(ROWS)).get_json()
    _agree(meta, infer)
    assert infer["outputs"][0]["data"] == [0, 2] and infer["outputs"][1]["shape"] == [2, 3]


def test_without_declared_outputs_metadata_advertises_what_infer_returns(serve: Any, iris_model_file: Path) -> None:
    store = open_store()
    store.upload(iris_model_file, "iris", signature={"inputs": WINE_SIGNATURE["inputs"]})
    store.upload(iris_model_file, "iris")  # v2: no signature at all
    for ref, version in (("iris:1", "1"), ("iris:latest", "2")):
        for options, name, datatype in (({}, "predict", "INT64"),
                                        ({"method": "predict_proba"}, "predict_proba", "FP64")):
            client = serve({"name": "iris", "lang": "sklearn", "model": ref, "options": options})
            assert client.post("/", json=ROWS).status_code == 200
            meta = client.get("/v2/models/iris").get_json()
            assert meta["versions"] == [version]
            assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [(name, datatype)]
            _agree(meta, client.post("/v2/models/iris/infer", json=_v2(ROWS)).get_json())


def test_bare_list_answer_is_kept_for_a_model_that_declares_no_outputs(serve: Any, iris_model_file: Path) -> None:
    """Backwards compatibility: nothing declared, nothing named: one prediction per row, as before."""
    client = serve({"name": "iris", "lang": "sklearn", "model": str(iris_model_file)})
    assert client.post("/", json=ROWS).get_json() == [0, 2]


def test_an_output_the_model_cannot_give_fails_the_load_naming_it(serve: Any, iris_model_file: Path) -> None:
    """A hostile or mistaken manifest: a float scalar output of a 3-class model is no output it has."""
    open_store().upload(iris_model_file, "odd", signature={
        "inputs": WINE_SIGNATURE["inputs"],
        "outputs": [{"name": "cultivar", "dtype": "int64", "shape": [-1]},
                    {"name": "score", "dtype": "float64", "shape": [-1]}]})
    client = serve({"name": "odd", "lang": "sklearn", "model": "odd:1"}, ready=False)
    reply = client.get("/_/ready")
    assert reply.status_code == 503
    body = reply.get_json()
    assert "signature.outputs[1] (score)" in body["error"] and "options.outputs" in body["error"]
    assert "Traceback" not in reply.get_data(as_text=True)
    assert client.post("/", json=ROWS).status_code == 503


@pytest.mark.heavy
def test_lightgbm_binary_declared_label_and_probability(serve: Any, tmp_path: Path) -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    path = tmp_path / "model.txt"
    lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y).booster_.save_model(str(path))
    open_store().upload(path, "match", signature={
        "inputs": [{"name": f"f{i}", "dtype": "float64", "shape": [-1]} for i in range(3)],
        "outputs": [{"name": "match", "dtype": "bool", "shape": [-1]},
                    {"name": "probability", "dtype": "float64", "shape": [-1]}]})
    client = serve({"name": "match", "lang": "lightgbm", "model": "match:1"})
    answer = client.post("/", json=[[2.0, 2.0, 0.0], [-2.0, -2.0, 0.0]]).get_json()
    assert [row["match"] for row in answer] == [True, False]
    assert answer[0]["probability"] > 0.5 > answer[1]["probability"]
    meta = client.get("/v2/models/match").get_json()
    v2 = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [2.0, 2.0, 0.0]}]}
    _agree(meta, client.post("/v2/models/match/infer", json=v2).get_json())


def test_a_pipeline_advertises_its_first_stage_inputs_and_last_stage_outputs(serve: Any,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRO_GATEWAY_URL", "http://127.0.0.1:9")  # never called: metadata needs no stage
    features = {"inputs": [{"name": "title", "dtype": "string", "shape": [-1]}],
                "outputs": [{"name": "score", "dtype": "float64", "shape": [-1]}]}
    classifier = {"inputs": [{"name": "score", "dtype": "float64", "shape": [-1]}],
                  "outputs": [{"name": "match", "dtype": "bool", "shape": [-1]}]}
    client = serve({"name": "pipe", "lang": "router", "chain": ["features", "classifier"],
                    "options": {"stage_signatures": {"features": features, "classifier": classifier}}})
    meta = client.get("/v2/models/pipe").get_json()
    assert meta["inputs"] == [{"name": "title", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "match", "datatype": "BOOL", "shape": [-1]}]


def test_onnx_declared_outputs_map_to_the_model_outputs_by_position(serve: Any, tmp_path: Path) -> None:
    """skl2onnx names its outputs ``label`` and ``probabilities``; the manifest declares its own names."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "model.onnx"
    path.write_bytes(to_onnx(model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}})
                     .SerializeToString())
    signature = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
                 "outputs": [{"name": "cultivar", "dtype": "int64", "shape": [-1]},
                             {"name": "probability", "dtype": "float32", "shape": [-1, 3]}]}
    open_store().upload(path, "wine-onnx", signature=signature)
    client = serve({"name": "wine-onnx", "lang": "onnx", "model": "wine-onnx:1"})
    answer = client.post("/", json=ROWS).get_json()
    assert [row["cultivar"] for row in answer] == [0, 2] and len(answer[0]["probability"]) == 3
    meta = client.get("/v2/models/wine-onnx").get_json()
    v2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [v for row in ROWS for v in row]}]}
    _agree(meta, client.post("/v2/models/wine-onnx/infer", json=v2).get_json())


@pytest.mark.heavy
def test_keras_declared_output_is_the_answer_under_its_declared_name(serve: Any, tmp_path: Path) -> None:
    import keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="prob")(inputs))
    model.save(tmp_path / "model.keras")
    open_store().upload(tmp_path / "model.keras", "keras-match", signature={
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
        "outputs": [{"name": "probability", "dtype": "float64", "shape": [-1]}]})
    client = serve({"name": "keras-match", "lang": "tensorflow", "model": "keras-match:1"})
    answer = client.post("/", json=ROWS).get_json()
    assert [set(row) for row in answer] == [{"probability"}, {"probability"}], answer
    meta = client.get("/v2/models/keras-match").get_json()
    v2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [v for row in ROWS for v in row]}]}
    _agree(meta, client.post("/v2/models/keras-match/infer", json=v2).get_json())


@pytest.mark.heavy
@pytest.mark.parametrize("objective", ["reg:squarederror", "binary:logistic", "multi:softprob"])
def test_xgboost_metadata_advertises_what_infer_returns(serve: Any, tmp_path: Path, objective: str) -> None:
    import xgboost as xgb

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] > 0).astype(int) + (objective == "multi:softprob") * (x[:, 1] > 0).astype(int)
    params = {"objective": objective, **({"num_class": 3} if objective.startswith("multi") else {})}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=5)
    path = tmp_path / "model.ubj"
    booster.save_model(str(path))
    name = f"xgb-{objective.split(':')[0]}"
    open_store().upload(path, name)
    for options in ({}, {"method": "predict_proba"}) if objective != "reg:squarederror" else ({},):
        client = serve({"name": name, "lang": "xgboost", "model": f"{name}:1", "options": options})
        meta = client.get(f"/v2/models/{name}").get_json()
        _agree(meta, client.post(f"/v2/models/{name}/infer", json=_v2(ROWS)).get_json())
