"""Signatures checked against what the model declares, at upload (issue 14 point 8).

Tiny real models trained here. pandas is not installed, so a scikit-learn model cannot be fitted on a
DataFrame; the test sets ``feature_names_in_`` as such a fit would (all the check reads). Heavy
frameworks (XGBoost, LightGBM, Keras) are behind the ``heavy`` marker, as elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression

from hydro_serving.errors import ValidationError
from hydro_serving.store import open_store
from hydro_serving.store.declared import METADATA_KEY, Declared, check_signature, declared_inputs

WINE = [str(n) for n in load_wine().feature_names]  # 13 names


def sig(*inputs: tuple[str, list[int]]) -> dict[str, Any]:
    return {"inputs": [{"name": n, "dtype": "float64", "shape": s} for n, s in inputs],
            "outputs": [{"name": "cultivar", "dtype": "int64", "shape": [-1]}]}


def per_feature(names: list[str]) -> dict[str, Any]:
    return sig(*[(n, [-1]) for n in names])


@pytest.fixture(scope="module")
def wine_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    x, y = load_wine(return_X_y=True)
    folder = tmp_path_factory.mktemp("wine")
    named = LogisticRegression(max_iter=2000).fit(x, y)
    named.feature_names_in_ = np.array(WINE, dtype=object)  # what a DataFrame fit records
    joblib.dump(named, folder / "named.joblib")
    joblib.dump(LogisticRegression(max_iter=2000).fit(x, y), folder / "unnamed.joblib")  # n_features_in_ only
    return {"named": folder / "named.joblib", "unnamed": folder / "unnamed.joblib"}


def _refused(store: Any, path: Path, signature: dict[str, Any], field: str, *words: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        store.upload(path, "wine", signature=signature)
    assert info.value.field == field, info.value.message
    for word in words:
        assert word in info.value.message, info.value.message
    return info.value


def test_sklearn_feature_names(tmp_path: Path, wine_models: dict[str, Path]) -> None:
    store = open_store(f"file://{tmp_path / 'store'}")
    path = wine_models["named"]
    _refused(store, path, sig(("foo", [-1])), "signature.inputs[0].name", "'foo'", "13 features", "alcohol",
             "feature_names_in_")
    _refused(store, path, per_feature(WINE[:12]), "signature.inputs", "missing from the signature: proline")
    _refused(store, path, per_feature(list(reversed(WINE))), "signature.inputs", "order")
    _refused(store, path, sig(("rows", [-1, 5])), "signature.inputs[0].shape", "5 values per row", "13 features")
    assert store.list_models() == []  # nothing written for a refused upload

    manifest = store.upload(path, "wine", signature=per_feature(WINE))
    assert manifest.metadata[METADATA_KEY]["names"] == WINE
    assert store.upload(path, "wine", signature=sig(("rows", [-1, 13]))).version == 2  # a matrix of rows
    assert store.upload(path, "wine").version == 3  # no signature: nothing to check, the model's word recorded
    hostile = store.upload(path, "wine", metadata={METADATA_KEY: {"source": "me", "names": ["x"]}})
    assert hostile.metadata[METADATA_KEY]["names"] == WINE  # the caller cannot plant the model's word


def test_sklearn_feature_count(tmp_path: Path, wine_models: dict[str, Path]) -> None:
    store = open_store(f"file://{tmp_path / 'store'}")
    _refused(store, wine_models["unnamed"], per_feature(["a", "b", "c"]), "signature.inputs",
             "3 input(s)", "13 features")
    thirteen = per_feature([f"f{i}" for i in range(13)])
    assert store.upload(wine_models["unnamed"], "wine", signature=thirteen).version == 1


def test_onnx_inputs(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    model = to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1].astype(np.float32), target_opset=15)
    path = tmp_path / "iris.onnx"
    path.write_bytes(model.SerializeToString())
    declared = declared_inputs(path, "onnx")
    assert declared is not None and declared.width == 4 and declared.source == "ONNX inputs"
    store = open_store(f"file://{tmp_path / 'store'}")
    _refused(store, path, per_feature(["a", "b", "c"]), "signature.inputs", "4 features")
    _refused(store, path, sig(("X", [-1, 3])), "signature.inputs[0].shape", "3 values per row")
    assert store.upload(path, "iris", signature=sig(("X", [-1, 4]))).version == 1


def test_several_named_tensors() -> None:
    """A model with several named inputs (ONNX, Keras): names and shapes must match."""
    from hydro_serving.contract import Signature
    from hydro_serving.store.declared import Tensor

    declared = Declared("Keras input shapes", tensors=(Tensor("image", (-1, 8, 8)), Tensor("meta", (-1, 3))))
    good = Signature.from_dict({"inputs": [{"name": "image", "dtype": "float32", "shape": [-1, 8, 8]},
                                           {"name": "meta", "dtype": "float32", "shape": [-1, 3]}]})
    check_signature(good, declared)
    with pytest.raises(ValidationError) as info:
        check_signature(Signature.from_dict({"inputs": [{"name": "img", "dtype": "float32"}]}), declared)
    assert info.value.field == "signature.inputs[0].name" and "image, meta" in info.value.message
    with pytest.raises(ValidationError) as info:
        check_signature(Signature.from_dict({"inputs": [{"name": "image", "dtype": "float32",
                                                          "shape": [-1, 8, 9]}]}), declared)
    assert info.value.field == "signature.inputs[0].shape" and "[-1, 8, 8]" in info.value.message
    with pytest.raises(ValidationError) as info:
        check_signature(Signature.from_dict({"inputs": [{"name": "image", "dtype": "float32"}]}), declared)
    assert info.value.field == "signature.inputs" and "missing from the signature: meta" in info.value.message


def test_hostile_model_files_do_not_break_upload(tmp_path: Path) -> None:
    """A file its framework cannot read, or a recorded 'model word' that is garbage: no crash, no check."""
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00not an onnx model")
    assert declared_inputs(bad, "onnx") is None
    assert Declared.from_dict({"source": "x", "names": "not a list", "width": True}) == Declared("x")
    assert Declared.from_dict(["x"]) is None
    assert Declared.from_dict({"source": 1}) is None


@pytest.mark.heavy
def test_booster_feature_names(tmp_path: Path) -> None:
    import lightgbm
    import xgboost

    x, y = load_wine(return_X_y=True)
    names = [n.replace("/", "_") for n in WINE]
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
                            xgboost.DMatrix(x, label=y, feature_names=names), num_boost_round=2)
    xgb_path = tmp_path / "wine.ubj"
    booster.save_model(str(xgb_path))
    lgb = lightgbm.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_leaves": 4},
                         lightgbm.Dataset(x, label=y, feature_name=names), num_boost_round=2)
    lgb_path = tmp_path / "wine.txt"
    lgb.save_model(str(lgb_path))
    store = open_store(f"file://{tmp_path / 'store'}")
    for path in (xgb_path, lgb_path):
        _refused(store, path, sig(("foo", [-1])), "signature.inputs[0].name", "'foo'", "booster feature names",
                 names[0])
        assert store.upload(path, "wine", signature=per_feature(names)).metadata[METADATA_KEY]["names"] == names


@pytest.mark.heavy
def test_keras_input_shapes(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input(shape=(4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    path = tmp_path / "iris.keras"
    model.save(path)
    declared = declared_inputs(path, "tensorflow")
    assert declared is not None and declared.width == 4 and declared.source == "Keras input shapes"
    store = open_store(f"file://{tmp_path / 'store'}")
    _refused(store, path, sig(("features", [-1, 5])), "signature.inputs[0].shape", "5 values per row", "4 features")
    assert store.upload(path, "iris", signature=sig(("features", [-1, 4]))).version == 1
