"""``null`` as a missing value for inputs declared ``nullable: true`` (issue 14 point 14).

Real models trained here on data with missing values (HistGradientBoosting, LightGBM) and one
that takes none (LogisticRegression), uploaded to a real directory store with their signatures,
served in-process by the real templates through the runtime's Flask app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from flask.testing import FlaskClient

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import ContractError
from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.stack.model import FunctionSpec
from hydro_serving.store import open_store

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _signature(nullable: bool) -> dict[str, Any]:
    return {"inputs": [{"name": f, "dtype": "float64", "shape": [-1], "nullable": nullable} for f in FEATURES]}


def _iris_with_gaps() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = x.copy()
    x[::7, 1] = np.nan  # sepal_width missing in every 7th row
    return x, y


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., FlaskClient]]:
    """``serve(model_object_or_path, name, lang, nullable)``: uploaded with its signature, served, ready."""
    apps = []

    def build(model: Any, name: str, nullable: bool, lang: str = "sklearn") -> FlaskClient:
        path = model if isinstance(model, Path) else tmp_path / f"{name}.joblib"
        if not isinstance(model, Path):
            joblib.dump(model, path)
        open_store().upload(path, name, signature=_signature(nullable))
        app = create_app(FunctionSpec(name=name, lang=lang, model=f"{name}:1"),
                         RuntimeConfig(load_failure_exit_after=None))
        apps.append(app)
        client = app.test_client()
        assert client.get("/_/ready?wait=10").status_code == 200
        return client

    yield build
    for app in apps:
        app.extensions["hydro_runtime"].shutdown()


GAP = [{"sepal_length": 5.1, "sepal_width": None, "petal_length": 1.4, "petal_width": 0.2},
       {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}]


def test_the_signature_schema_knows_nullable() -> None:
    sig = Signature.from_dict(_signature(True))
    assert all(f.nullable for f in sig.inputs) and sig.to_dict()["inputs"][0]["nullable"] is True
    assert "nullable" not in Signature.from_dict(_signature(False)).to_dict()["inputs"][0]
    with pytest.raises(ContractError) as caught:
        Signature.from_dict({"inputs": [{"name": "n", "dtype": "int64", "nullable": True}]})
    assert caught.value.field == "signature.inputs[0].nullable" and "float" in caught.value.message
    with pytest.raises(ContractError) as caught:
        Signature.from_dict({"inputs": [{"name": "n", "dtype": "float64", "nullable": "yes"}]})
    assert caught.value.field == "signature.inputs[0].nullable"


def test_null_is_a_missing_value_for_a_model_that_takes_nan(serve: Any) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    client = serve(HistGradientBoostingClassifier(max_iter=30).fit(*_iris_with_gaps()), "hgb", nullable=True)
    reply = client.post("/", json=GAP)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json() == [0, 2]
    assert client.post("/", json=[[5.1, None, 1.4, 0.2]]).get_json() == [0]  # rows too
    assert client.post("/", json={f: [v] for f, v in GAP[0].items()}).get_json() == [0]  # columnar too
    v2 = {"inputs": [{"name": f, "datatype": "FP64", "shape": [1], "data": [GAP[0][f]]} for f in FEATURES]}
    reply = client.post("/v2/models/hgb/infer", json=v2)
    assert reply.status_code == 200 and reply.get_json()["outputs"][0]["data"] == [0], reply.get_json()


def test_null_is_refused_naming_the_field_when_the_signature_does_not_declare_it(serve: Any) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    client = serve(HistGradientBoostingClassifier(max_iter=30).fit(*_iris_with_gaps()), "strict", nullable=False)
    reply = client.post("/", json=GAP)
    assert reply.status_code == 400
    body = reply.get_json()
    assert body["field"] == "[0].sepal_width" and "nullable: true" in body["error"]
    v2 = {"inputs": [{"name": f, "datatype": "FP64", "shape": [1], "data": [GAP[0][f]]} for f in FEATURES]}
    reply = client.post("/v2/models/strict/infer", json=v2)
    assert reply.status_code == 400 and reply.get_json()["field"] == "inputs[1].data"


def test_null_for_a_model_that_takes_no_nan_is_a_400_naming_the_cell(serve: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A signature may say nullable for a model that cannot take NaN: each null is then refused, by name."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    client = serve(LogisticRegression(max_iter=500).fit(*load_iris(return_X_y=True)), "lr", nullable=True)
    assert "declared nullable but LogisticRegression does not accept missing values" in caplog.text
    reply = client.post("/", json=GAP)
    assert reply.status_code == 400
    body = reply.get_json()
    assert body["field"] == "[0].sepal_width" and "LogisticRegression" in body["error"]
    assert "Traceback" not in reply.get_data(as_text=True)
    assert client.post("/", json=GAP[1:]).get_json() == [2]  # the same function still answers good rows


@pytest.mark.heavy
def test_lightgbm_takes_null_where_declared(serve: Any, tmp_path: Path) -> None:
    import lightgbm as lgb

    x, y = _iris_with_gaps()
    path = tmp_path / "model.txt"
    lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y).booster_.save_model(str(path))
    client = serve(path, "lgb", nullable=True, lang="lightgbm")
    reply = client.post("/", json=GAP)
    assert reply.status_code == 200 and reply.get_json() == [0, 2], reply.get_json()
