"""spark template: one Spark ML PipelineModel (StringIndexer -> VectorAssembler -> LogisticRegression),
trained once per session in its own process, uploaded, and served by one replica through the gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.frameworks.helpers import TIMINGS, invoke_timed, outputs_by_name, upload, v2

pytestmark = pytest.mark.heavy
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def spark_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("spark")
    done = subprocess.run([sys.executable, str(HERE / "spark_train.py"), str(out)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "expected.json").read_text())
    TIMINGS["spark training (process start to saved model, s)"] = round(info["train_seconds"], 1)
    return {"path": out / "model", **info}


@pytest.fixture(scope="module")
def spark_function(fw_gateway: Any, spark_model: dict[str, Any]) -> dict[str, Any]:
    fw_gateway.deploy({"name": "spark-lr", "lang": "spark", "model": upload(spark_model["path"], "spark-lr"),
                       "scale": {"min": 0, "max": 1}})
    return spark_model


def test_json_records_match_spark_transform(fw_gateway: Any, spark_function: dict[str, Any]) -> None:
    status, _, body = invoke_timed(fw_gateway, "spark-lr", spark_function["rows"], "spark")
    assert status == 200, body
    expected = spark_function["expected"]
    assert [r["prediction"] for r in body] == [e["prediction"] for e in expected]
    for got, want in zip(body, expected, strict=True):
        assert got["probability"] == pytest.approx(want["probability"], rel=1e-9)
    row = spark_function["rows"][1]
    status, _, body = fw_gateway.invoke("spark-lr", row)  # one record
    assert status == 200 and body[0]["prediction"] == expected[1]["prediction"], body


def test_v2_tensors_by_column_name(fw_gateway: Any, spark_function: dict[str, Any]) -> None:
    rows = spark_function["rows"]
    path, request = v2("spark-lr", [
        {"name": "x1", "shape": [len(rows)], "datatype": "FP64", "data": [r["x1"] for r in rows]},
        {"name": "x2", "shape": [len(rows)], "datatype": "FP64", "data": [r["x2"] for r in rows]},
        {"name": "cat", "shape": [len(rows)], "datatype": "BYTES", "data": [r["cat"] for r in rows]},
    ])
    status, _, body = fw_gateway.invoke("spark-lr", request, path=path)
    assert status == 200, body
    out = outputs_by_name(body)
    assert out["prediction"]["data"] == [e["prediction"] for e in spark_function["expected"]]
    assert out["probability"]["shape"] == [len(rows), 2]
    flat = [p for e in spark_function["expected"] for p in e["probability"]]
    assert out["probability"]["data"] == pytest.approx(flat, rel=1e-9)


def test_bad_input_is_a_400_naming_the_column(fw_gateway: Any, spark_function: dict[str, Any]) -> None:
    cases = [
        ([{"x1": 0.5, "cat": "a"}], "[0].x2"),  # missing column
        ([{"x1": 0.5, "x2": 0.1, "cat": "a"}, {"x1": "high", "x2": 0.1, "cat": "a"}], "[1].x1"),  # text for a number
        ([{"x1": 0.5, "x2": 0.1, "cat": "zebra"}], "[0].cat"),  # a category the model never saw
        ([{"x1": 0.5, "x2": None, "cat": "a"}], "[0].x2"),  # null the assembler cannot take
    ]
    for payload, field in cases:
        status, _, body = fw_gateway.invoke("spark-lr", payload)
        assert status == 400 and body["field"] == field, (payload, body)
    status, _, body = fw_gateway.invoke("spark-lr", spark_function["rows"][:1])  # still serving afterwards
    assert status == 200, body


def test_spark_model_folder_is_detected_by_the_store(spark_model: dict[str, Any]) -> None:
    from hydro_serving.store import detect_framework

    assert detect_framework(spark_model["path"]) == "spark"
