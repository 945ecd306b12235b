"""tensorflow template: a tiny Keras model trained here, served as .keras and as an exported SavedModel.

Both are uploaded to the store and invoked through the real gateway (JSON and V2); answers are
compared with ``model.predict`` on the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.frameworks.helpers import invoke_timed, outputs_by_name, upload, v2

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two named inputs (feats [-1, 3], score [-1, 1]) -> one sigmoid output 'prob'; saved both ways."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    feats = keras.Input(shape=(3,), name="feats")
    score = keras.Input(shape=(1,), name="score")
    hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()([feats, score]))
    model = keras.Model([feats, score], keras.layers.Dense(1, activation="sigmoid", name="prob")(hidden))
    model.compile("adam", "binary_crossentropy")
    rng = np.random.default_rng(0)
    x, s = rng.random((64, 3)).astype("float32"), rng.random((64, 1)).astype("float32")
    model.fit({"feats": x, "score": s}, (x.sum(axis=1) + s[:, 0] > 2).astype("float32"), epochs=2, verbose=0)
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "model.keras")
    model.export(str(folder / "exported"), verbose=False)
    rows_x, rows_s = x[:5], s[:5]
    expected = model.predict({"feats": rows_x, "score": rows_s}, verbose=0)[:, 0]
    return {"folder": folder, "x": rows_x, "s": rows_s, "expected": expected}


@pytest.fixture(scope="module")
def tf_functions(fw_gateway: Any, keras_model: dict[str, Any]) -> dict[str, Any]:
    folder: Path = keras_model["folder"]
    fw_gateway.deploy({"name": "tf-keras", "lang": "tensorflow", "model": upload(folder / "model.keras", "tf-keras")})
    fw_gateway.deploy({"name": "tf-saved", "lang": "tensorflow", "model": upload(folder / "exported", "tf-saved"),
                       "options": {"outputs": {"probability": "output_0:0"}}})
    return keras_model


def test_keras_json_records_match_predict(fw_gateway: Any, tf_functions: dict[str, Any]) -> None:
    records = [{"feats": f.tolist(), "score": float(s[0])} for f, s in zip(tf_functions["x"], tf_functions["s"],
                                                                            strict=True)]
    status, _, body = invoke_timed(fw_gateway, "tf-keras", records, "tensorflow (.keras)")
    assert status == 200, body
    assert body == pytest.approx(tf_functions["expected"].tolist(), rel=1e-5)
    columnar = {"feats": tf_functions["x"].tolist(), "score": tf_functions["s"].tolist()}
    status, _, body = fw_gateway.invoke("tf-keras", columnar)
    assert status == 200 and body == pytest.approx(tf_functions["expected"].tolist(), rel=1e-5), body


def test_keras_v2_tensors_by_name_and_dtype(fw_gateway: Any, tf_functions: dict[str, Any]) -> None:
    x, s = tf_functions["x"], tf_functions["s"]
    path, request = v2("tf-keras", [
        {"name": "score", "shape": list(s.shape), "datatype": "FP32", "data": s.reshape(-1).tolist()},
        {"name": "feats", "shape": list(x.shape), "datatype": "FP64", "data": x.reshape(-1).tolist()},
    ])
    status, _, body = fw_gateway.invoke("tf-keras", request, path=path)
    assert status == 200, body
    out = outputs_by_name(body)["prob"]
    assert out["datatype"] == "FP32" and out["shape"] == [len(x), 1]
    assert out["data"] == pytest.approx(tf_functions["expected"].tolist(), rel=1e-5)


def test_saved_model_json_and_v2_match_predict(fw_gateway: Any, tf_functions: dict[str, Any]) -> None:
    x, s = tf_functions["x"], tf_functions["s"]
    records = [{"feats": f.tolist(), "score": [float(v[0])]} for f, v in zip(x, s, strict=True)]
    status, _, body = invoke_timed(fw_gateway, "tf-saved", records, "tensorflow (SavedModel)")
    assert status == 200, body
    assert [r["probability"] for r in body] == pytest.approx(tf_functions["expected"].tolist(), rel=1e-5)
    path, request = v2("tf-saved", [
        {"name": "feats", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()},
        {"name": "score", "shape": list(s.shape), "datatype": "FP32", "data": s.reshape(-1).tolist()},
    ])
    status, _, body = fw_gateway.invoke("tf-saved", request, path=path)
    assert status == 200, body
    assert outputs_by_name(body)["probability"]["data"] == pytest.approx(tf_functions["expected"].tolist(), rel=1e-5)


def test_bad_shapes_and_dtypes_are_a_400_naming_the_input(fw_gateway: Any, tf_functions: dict[str, Any]) -> None:
    status, _, body = fw_gateway.invoke("tf-keras", [{"feats": [1.0, 2.0], "score": 0.5}])
    assert status == 400 and body["field"] == "[0].feats", body  # the model's own signature: feats is [-1, 3]
    status, _, body = fw_gateway.invoke("tf-keras", [{"feats": ["a", "b", "c"], "score": 0.5}])
    assert status == 400 and "feats" in body["field"], body
    status, _, body = fw_gateway.invoke("tf-keras", [{"feats": [1.0, 2.0, 3.0]}])
    assert status == 400 and body["field"] == "[0].score", body
    path, request = v2("tf-saved", [
        {"name": "feats", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]},
        {"name": "score", "shape": [1, 1], "datatype": "FP32", "data": [0.5]},
    ])
    status, _, body = fw_gateway.invoke("tf-saved", request, path=path)
    assert status == 400 and body["field"] == "inputs[0]" and "feats" in body["error"], body
    path, request = v2("tf-saved", [
        {"name": "feats", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]},
        {"name": "score", "shape": [1, 1], "datatype": "FP32", "data": [0.5]},
    ])
    status, _, body = fw_gateway.invoke("tf-saved", request, path=path)
    assert status == 400 and "feats" in body["error"], body


def test_tensorflow_formats_are_detected_by_the_store(keras_model: dict[str, Any]) -> None:
    from hydro_serving.store import detect_framework

    assert detect_framework(keras_model["folder"] / "model.keras") == "tensorflow"
    assert detect_framework(keras_model["folder"] / "exported") == "tensorflow"
