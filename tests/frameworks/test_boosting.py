"""xgboost and lightgbm templates: tiny real models trained here, uploaded, served through the real gateway.

Each answer is compared with the framework's own sklearn-wrapper predictions on the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.frameworks.helpers import invoke_timed, outputs_by_name, upload, v2

pytestmark = pytest.mark.heavy

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SIGNATURE = {"inputs": [{"name": f, "dtype": "float64", "shape": [-1]} for f in FEATURES],
             "outputs": [{"name": "label", "dtype": "int64", "shape": [-1]},
                         {"name": "p_virginica", "dtype": "float64", "shape": [-1]}]}


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def rows(iris: tuple[Any, Any]) -> Any:
    x, _ = iris
    return x[::15]  # 10 rows across the three classes


@pytest.fixture(scope="module")
def xgb_function(fw_gateway: Any, iris: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-class XGBClassifier in .ubj, with a signature; outputs a label and one class's probability."""
    import xgboost as xgb

    x, y = iris
    model = xgb.XGBClassifier(n_estimators=8, max_depth=2, n_jobs=1).fit(x, y)
    path = tmp_path_factory.mktemp("xgb") / "model.ubj"
    model.save_model(path)
    ref = upload(path, "iris-xgb", SIGNATURE)
    fw_gateway.deploy({"name": "iris-xgb", "lang": "xgboost", "model": ref,
                       "options": {"outputs": {"label": "label", "p_virginica": "proba:2"}}})
    binary = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(x, (y == 2).astype(int))
    bpath = tmp_path_factory.mktemp("xgb-binary") / "model.json"
    binary.save_model(bpath)
    fw_gateway.deploy({"name": "iris-xgb-binary", "lang": "xgboost", "model": upload(bpath, "iris-xgb-binary"),
                       "options": {"method": "predict_proba"}})
    return {"model": model, "binary": binary}


@pytest.fixture(scope="module")
def lgb_function(fw_gateway: Any, iris: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-class LGBMClassifier saved as text without feature names; method predict_proba."""
    import lightgbm as lgb

    x, y = iris
    model = lgb.LGBMClassifier(n_estimators=8, num_leaves=4, min_child_samples=5, n_jobs=1, verbose=-1).fit(x, y)
    path = tmp_path_factory.mktemp("lgb") / "model.txt"
    model.booster_.save_model(path)
    fw_gateway.deploy({"name": "iris-lgb", "lang": "lightgbm", "model": upload(path, "iris-lgb"),
                       "options": {"method": "predict_proba"}})
    return {"model": model, "path": path}


def records(x: Any) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in x]


# ---- xgboost ---------------------------------------------------------------------------------------


def test_xgboost_json_records_match_the_framework(fw_gateway: Any, xgb_function: dict[str, Any], rows: Any) -> None:
    status, _, body = invoke_timed(fw_gateway, "iris-xgb", records(rows), "xgboost")
    assert status == 200, body
    model = xgb_function["model"]
    assert [r["label"] for r in body] == model.predict(rows).tolist()
    assert [r["p_virginica"] for r in body] == pytest.approx(model.predict_proba(rows)[:, 2].tolist(), rel=1e-6)


def test_xgboost_2d_list_and_v2_match(fw_gateway: Any, xgb_function: dict[str, Any], rows: Any) -> None:
    model = xgb_function["model"]
    status, _, body = fw_gateway.invoke("iris-xgb", rows.tolist())
    assert status == 200, body
    assert [r["label"] for r in body] == model.predict(rows).tolist()
    path, request = v2("iris-xgb", [{"name": f, "shape": [len(rows)], "datatype": "FP64", "data": rows[:, j].tolist()}
                                    for j, f in enumerate(FEATURES)])
    status, _, body = fw_gateway.invoke("iris-xgb", request, path=path)
    assert status == 200, body
    out = outputs_by_name(body)
    assert out["label"]["data"] == model.predict(rows).tolist()
    assert out["label"]["datatype"] == "INT64"
    assert out["p_virginica"]["data"] == pytest.approx(model.predict_proba(rows)[:, 2].tolist(), rel=1e-6)


def test_xgboost_binary_probabilities_are_two_columns(fw_gateway: Any, xgb_function: dict[str, Any],
                                                      rows: Any) -> None:
    status, _, body = invoke_timed(fw_gateway, "iris-xgb-binary", rows.tolist(), "xgboost (binary)")
    assert status == 200, body
    expected = xgb_function["binary"].predict_proba(rows)
    assert np.allclose(np.array(body), expected, rtol=1e-6)


def test_xgboost_bad_input_is_a_400_naming_the_field(fw_gateway: Any, xgb_function: dict[str, Any],
                                                     rows: Any) -> None:
    bad = records(rows[:2])
    del bad[1]["petal_length"]
    status, _, body = fw_gateway.invoke("iris-xgb", bad)
    assert status == 400 and body["field"] == "[1].petal_length", body
    bad = records(rows[:1])
    bad[0]["sepal_width"] = "wide"
    status, _, body = fw_gateway.invoke("iris-xgb", bad)
    assert status == 400 and body["field"] == "[0].sepal_width", body
    status, _, body = fw_gateway.invoke("iris-xgb-binary", [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0]])
    assert status == 400 and body["field"] == "[1]", body
    status, _, body = fw_gateway.invoke("iris-xgb-binary", [[1.0, "x", 3.0, 4.0]])
    assert status == 400 and body["field"] == "[0][1]", body


# ---- lightgbm --------------------------------------------------------------------------------------


def test_lightgbm_json_and_v2_match_the_framework(fw_gateway: Any, lgb_function: dict[str, Any], rows: Any) -> None:
    expected = lgb_function["model"].predict_proba(rows)
    status, _, body = invoke_timed(fw_gateway, "iris-lgb", rows.tolist(), "lightgbm")
    assert status == 200, body
    assert np.allclose(np.array(body), expected, rtol=1e-9)
    path, request = v2("iris-lgb", [{"name": "x", "shape": list(rows.shape), "datatype": "FP64",
                                     "data": rows.reshape(-1).tolist()}])
    status, _, body = fw_gateway.invoke("iris-lgb", request, path=path)
    assert status == 200, body
    (out,) = body["outputs"]
    assert out["name"] == "predict_proba" and out["shape"] == [len(rows), 3]
    assert np.allclose(np.array(out["data"]).reshape(len(rows), 3), expected, rtol=1e-9)


def test_lightgbm_nulls_are_missing_values(fw_gateway: Any, lgb_function: dict[str, Any], rows: Any) -> None:
    x = rows[:2].tolist()
    x[0][3] = None
    status, _, body = fw_gateway.invoke("iris-lgb", x)
    assert status == 200, body
    expected = lgb_function["model"].predict_proba(np.array(x, dtype=float))
    assert np.allclose(np.array(body), expected, rtol=1e-9)


def test_lightgbm_bad_input_is_a_400_naming_the_field(fw_gateway: Any, lgb_function: dict[str, Any]) -> None:
    status, _, body = fw_gateway.invoke("iris-lgb", [[5.0, 3.0, 1.0, 0.2, 9.9]])
    assert status == 400 and body["field"] == "[0]", body
    status, _, body = fw_gateway.invoke("iris-lgb", [{"a": 1.0}])  # no feature names in the model: say so
    assert status == 400 and body["field"] == "$" and "feature names" in body["error"], body
    path, request = v2("iris-lgb", [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}])
    status, _, body = fw_gateway.invoke("iris-lgb", request, path=path)
    assert status == 400 and body["field"] == "inputs[0].shape", body


def test_lightgbm_model_file_is_detected_by_the_store(lgb_function: dict[str, Any]) -> None:
    from hydro_serving.store import detect_framework

    assert detect_framework(Path(lgb_function["path"])) == "lightgbm"
