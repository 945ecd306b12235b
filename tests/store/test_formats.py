"""Framework detection, training-data profiles, signature files, references and store URLs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hydro_serving.errors import ConfigError, ValidationError
from hydro_serving.store import detect_framework, load_signature_file, open_store, parse_ref, profile_csv
from hydro_serving.store.local import DirectoryBackend


def test_detect_real_sklearn_and_onnx(tmp_path: Path, iris_model_file: Path) -> None:
    import joblib
    from skl2onnx import to_onnx

    model = joblib.load(iris_model_file)
    onnx_path = tmp_path / "iris.onnx"
    onnx_path.write_bytes(to_onnx(model, np.zeros((1, 4), dtype=np.float32)).SerializeToString())
    assert detect_framework(iris_model_file) == "sklearn"
    assert detect_framework(onnx_path) == "onnx"
    for suffix in (".pkl", ".pickle", ".skops"):
        path = tmp_path / f"m{suffix}"
        path.write_bytes(iris_model_file.read_bytes())
        assert detect_framework(path) == "sklearn"
    folder = tmp_path / "with-extras"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(onnx_path.read_bytes())
    (folder / "README.md").write_text("notes")
    assert detect_framework(folder) == "onnx"
    (folder / "preprocess.joblib").write_bytes(iris_model_file.read_bytes())
    assert detect_framework(folder) is None  # two frameworks: ambiguous, not guessed


def test_detect_layouts_of_frameworks_not_installed_here(tmp_path: Path) -> None:
    """Spark, TensorFlow, XGBoost and LightGBM are not installed on this machine; their on-disk layouts are
    written by hand, byte-for-byte in each framework's documented format where detection reads content."""
    spark = tmp_path / "spark"
    (spark / "metadata").mkdir(parents=True)
    (spark / "stages" / "0_lr").mkdir(parents=True)
    (spark / "metadata" / "part-00000").write_text('{"class":"org.apache.spark.ml.PipelineModel"}')
    assert detect_framework(spark) == "spark"
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    (spark).rename(wrapped / "pipeline")
    assert detect_framework(wrapped) == "spark"

    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    assert detect_framework(saved) == "tensorflow"
    keras = tmp_path / "m.keras"
    keras.write_bytes(b"PK\x03\x04")
    assert detect_framework(keras) == "tensorflow"

    xgb_json = tmp_path / "booster.json"
    xgb_json.write_text(json.dumps({"learner": {"attributes": {}, "gradient_booster": {"name": "gbtree"}},
                                    "version": [2, 0, 3]}))
    assert detect_framework(xgb_json) == "xgboost"
    other_json = tmp_path / "config.json"
    other_json.write_text('{"threshold": 0.5}')
    assert detect_framework(other_json) is None
    for name in ("m.ubj", "m.xgb"):
        (tmp_path / name).write_bytes(b"{L\x00")
        assert detect_framework(tmp_path / name) == "xgboost"

    lgb = tmp_path / "model.txt"
    lgb.write_text("tree\nversion=v4\nnum_class=1\n")
    assert detect_framework(lgb) == "lightgbm"
    notes = tmp_path / "notes.txt"
    notes.write_text("just text\n")
    assert detect_framework(notes) is None
    assert detect_framework(tmp_path / "missing.onnx") is None


def test_profile_numbers_strings_and_missing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ages = rng.integers(18, 90, size=200)
    incomes = rng.normal(50_000, 8_000, size=200).round(2)
    cities = ["paris", "oslo", "rome", "paris"] * 50
    lines = ["age,income,city,empty"]
    for i, (a, inc, c) in enumerate(zip(ages, incomes, cities, strict=True)):
        lines.append(f"{a},{'' if i % 20 == 0 else inc},{c},")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    prof = profile_csv(path)
    assert prof["rows"] == 200
    age, income, city, empty = prof["columns"]
    assert age["type"] == "integer" and age["count"] == 200 and age["missing"] == 0
    assert age["min"] == ages.min() and age["max"] == ages.max()
    assert age["mean"] == pytest.approx(ages.mean()) and age["std"] == pytest.approx(ages.std())
    assert age["quantiles"]["p50"] == pytest.approx(np.percentile(ages, 50))
    assert set(age["quantiles"]) == {"p5", "p25", "p50", "p75", "p95"}
    present = np.array([v for i, v in enumerate(incomes) if i % 20])
    assert income["type"] == "float" and income["missing"] == 10
    assert income["mean"] == pytest.approx(present.mean())
    assert income["quantiles"]["p95"] == pytest.approx(np.percentile(present, 95))
    assert city["type"] == "string" and city["unique"] == 3
    assert city["top"][0] == {"value": "paris", "count": 100}
    assert empty["type"] == "empty" and empty["missing"] == 200


def test_profile_semicolon_csv(tmp_path: Path) -> None:
    path = tmp_path / "eu.csv"
    path.write_text("a;b\n1;x\n2;y\n")
    prof = profile_csv(path)
    assert [c["name"] for c in prof["columns"]] == ["a", "b"]


@pytest.mark.parametrize(("content", "needle"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    (b'{"a": 1}\n', "JSON"),
    (b"a,b\n", "no data rows"),
    (b"a,b\n1,2\n3,4,5\n", "line 3"),
    (b"\xff\xfe\xfa\xfb,1\n", "UTF-8"),
])
def test_profile_rejects_non_csv(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(ValidationError, match=needle) as info:
        profile_csv(path)
    assert info.value.field == "training_data"


def test_signature_files(tmp_path: Path) -> None:
    plain = tmp_path / "sig.json"
    plain.write_text(json.dumps({"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
                                 "outputs": [{"name": "label", "dtype": "int64", "shape": [-1]}]}))
    sig = load_signature_file(plain)
    assert sig.input_names == ["x"] and sig.inputs[0].shape == (-1, 4)

    hydrosphere = tmp_path / "serving.yaml"  # a Hydrosphere model definition with its contract
    hydrosphere.write_text(
        "kind: Model\nname: census\nruntime: hydrosphere/serving-runtime-python-3.7:3.0.0\n"
        "install-command: pip install -r requirements.txt\npayload: [src/, model.joblib]\n"
        "contract:\n  name: predict\n  inputs:\n    age:\n      shape: scalar\n      type: int64\n"
        "      profile: numerical\n    workclass:\n      shape: scalar\n      type: string\n"
        "      profile: categorical\n  outputs:\n    y:\n      shape: scalar\n      type: int64\n")
    sig = load_signature_file(hydrosphere)
    assert sig.input_names == ["age", "workclass"]
    assert sig.inputs[0].shape == () and sig.inputs[1].dtype == "string" and sig.inputs[1].profile == "categorical"

    for text, needle in [("inputs: [ {name: x\n", "not valid YAML"), ("- 1\n- 2\n", "must hold an object"),
                         ("threshold: 3\n", "neither inputs nor outputs"),
                         ("inputs:\n  - {name: x, dtype: float99}\n", "float99"),
                         ("inputs:\n  - {name: x, dtype: int64, shape: [0]}\n", "shape")]:
        bad = tmp_path / "bad.yml"
        bad.write_text(text)
        with pytest.raises(ValidationError, match=needle):
            load_signature_file(bad)
    with pytest.raises(ValidationError, match="does not exist"):
        load_signature_file(tmp_path / "absent.yml")


def test_refs() -> None:
    assert (parse_ref("m").name, parse_ref("m").alias, parse_ref("m").version) == ("m", "latest", None)
    assert parse_ref("m:3").version == 3 and parse_ref("m:3").pinned
    assert parse_ref("m:production").alias == "production"
    for bad in ("", "M", "m:", "m:0", "m:-1", "m:Prod", "-m", "a" * 64, "m:1:2"):
        with pytest.raises(ValidationError):
            parse_ref(bad)


def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_store(f"file://{tmp_path}").backend, DirectoryBackend)
    assert open_store(str(tmp_path / "plain")).url == f"file://{tmp_path / 'plain'}"
    monkeypatch.setenv("HYDRO_STORE", f"file://{tmp_path / 'env'}")
    assert open_store().url == f"file://{tmp_path / 'env'}"
    monkeypatch.delenv("HYDRO_STORE")
    monkeypatch.setenv("HYDRO_HOME", str(tmp_path / "home"))
    assert open_store().url == f"file://{tmp_path / 'home' / 'store'}"
    s3 = open_store("s3://bucket-1/some/prefix")
    assert s3.url == "s3://bucket-1/some/prefix"
    for bad in ("ftp://x/y", "file://", "s3://", "s3://bad bucket/x"):
        with pytest.raises(ConfigError):
            open_store(bad)


def test_store_directory_not_creatable(tmp_path: Path, iris_model_file: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    from hydro_serving.errors import StoreError

    with pytest.raises(StoreError, match="cannot create the store directory"):
        open_store(f"file://{blocker / 'store'}").upload(iris_model_file, "m")
