"""The sklearn template served by `hydro run` and by the runtime process: answers, readiness, bad input.

Every server is a real process on 127.0.0.1 serving a model trained here; each bad request is
followed by a good one to show the server keeps serving.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tests.conftest import free_port
from tests.runtime.gate_model import Gate
from tests.runtime.helpers import REPO, Proc, base_env, get, post, request, start_hydro_run, start_runtime

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]

STACK = """\
version: 1.0
provider:
  name: hydro
functions:
  iris:
    lang: sklearn
    model: ./model.joblib
"""


@pytest.fixture(scope="module")
def iris_data() -> tuple[np.ndarray, np.ndarray]:
    return load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory, iris_data: tuple[np.ndarray, np.ndarray]) -> Iterator[dict]:
    """`hydro run iris` on a model whose loading waits for a gate file the test creates.

    What the server answers while the gate is still closed is recorded here, before any test can
    open it (``while_loading``), so the "503 until loaded" test does not depend on running first.
    """
    work = tmp_path_factory.mktemp("sk-gated")
    gate = work / "gate"
    x, y = iris_data
    model = Pipeline([("gate", Gate(str(gate))), ("clf", LogisticRegression(max_iter=500))]).fit(x, y)
    # pandas is not installed here, so the model cannot be fitted on a DataFrame; set the names a
    # DataFrame fit would have recorded, which is all the template reads.
    model.steps[0][1].feature_names_in_ = np.array(FEATURES, dtype=object)  # read through the Pipeline
    joblib.dump(model, work / "model.joblib")
    (work / "stack.yml").write_text(STACK)
    port = free_port()
    proc = start_hydro_run("iris", work / "stack.yml", port, base_env(work / "home", pythonpath=REPO))
    try:
        proc.wait_up()
        while_loading = {"ready": get(port, "/_/ready"), "v2_ready": get(port, "/v2/health/ready"),
                         "v2_model_ready": get(port, "/v2/models/iris/ready"), "invoke": post(port, "/", ROWS),
                         "health": get(port, "/_/health")}
        yield {"proc": proc, "port": port, "gate": gate, "model": model, "while_loading": while_loading}
    finally:
        gate.touch()
        proc.stop()


@pytest.fixture(scope="module")
def ready(gated: dict) -> dict:
    """The gate opened (once, by whichever test asks first); ``seen``: the /_/ready statuses until 200."""
    if "seen" not in gated:
        gated["gate"].touch()
        gated["seen"] = gated["proc"].wait_ready()
    return gated


def test_ready_is_503_with_json_until_the_model_is_loaded(ready: dict) -> None:
    loading = ready["while_loading"]
    reply = loading["ready"]
    assert reply.status == 503 and reply.json["code"] == "unavailable" and "loading" in reply.json["error"]
    assert loading["v2_ready"].status == 503
    assert loading["v2_model_ready"].json == {"name": "iris", "ready": False}
    early = loading["invoke"]
    assert early.status == 503 and early.json["function"] == "iris" and early.headers.get("retry-after") == "1"
    assert loading["health"].json["state"] == "loading"
    seen = ready["seen"]
    assert seen[-1] == 200 and set(seen[:-1]) <= {503}
    body = get(ready["port"], "/_/ready").json
    assert body["status"] == "ready" and body["load_seconds"] > 0


def test_invoke_answers_like_model_predict(ready: dict) -> None:
    port, model = ready["port"], ready["model"]
    want = model.predict(np.array(ROWS)).tolist()
    assert post(port, "/", ROWS).json == want  # a 2-D list
    records = [dict(zip(FEATURES, row, strict=True)) for row in ROWS]
    assert post(port, "/", records).json == want  # records, ordered by feature_names_in_
    shuffled = [dict(reversed(list(r.items()))) for r in records]
    assert post(port, "/", shuffled).json == want  # key order in the request does not matter
    assert post(port, "/", records[1]).json == want[1:2]  # one record
    columns = {f: [row[i] for row in ROWS] for i, f in enumerate(FEATURES)}
    assert post(port, "/", columns).json == want  # a columnar object


def test_v2_infer_one_matrix_or_one_tensor_per_feature(ready: dict) -> None:
    port, model = ready["port"], ready["model"]
    want = model.predict(np.array(ROWS)).tolist()
    flat = [v for row in ROWS for v in row]
    reply = post(port, "/v2/models/iris/infer", {"id": "req-1", "inputs": [
        {"name": "anything", "shape": [3, 4], "datatype": "FP64", "data": flat}]})
    assert reply.status == 200, reply.body
    assert reply.json["id"] == "req-1" and reply.json["model_name"] == "iris"
    (out,) = reply.json["outputs"]
    assert out["name"] == "predict" and out["shape"] == [3] and out["data"] == want
    per_feature = [{"name": f, "shape": [3], "datatype": "FP32", "data": [row[i] for row in ROWS]}
                   for i, f in reversed(list(enumerate(FEATURES)))]
    reply = post(port, "/v2/models/iris/infer", {"inputs": per_feature})
    assert reply.status == 200 and reply.json["outputs"][0]["data"] == want and "id" not in reply.json
    meta = get(port, "/v2/models/iris").json
    assert meta["name"] == "iris" and [t["name"] for t in meta["inputs"]] == FEATURES


@pytest.mark.parametrize(("body", "content_type", "status", "field", "words"), [
    (b'{"sepal_length": 1,', "application/json", 400, "$", "invalid JSON"),
    (b"", "application/json", 400, "$", "empty"),
    (b"\xff\xfe", "application/json", 400, "$", "UTF-8"),
    (b"[[1, 2, 3, 4]]", "text/plain", 415, "Content-Type", "application/json"),
    (b'[{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]', "application/json", 400,
     "[0].petal_width", "missing feature 'petal_width'"),
    (b'[[5.1, 3.5, 1.4, "wide"]]', "application/json", 400, "[0][3]", "must be a number"),
    (b'[[5.1, 3.5, 1.4, 0.2, 9.9]]', "application/json", 400, "[0]", "takes 4 features"),
    (b'[[5.1, 3.5, 1.4]]', "application/json", 400, "[0]", "takes 4 features"),
    (b'[5.1, 3.5, 1.4, 0.2]', "application/json", 400, "$", "flat list"),
    (b"[]", "application/json", 400, "$", "no rows"),
    (b'"hello"', "application/json", 400, "$", "str"),
    (b'{"sepal_length": [1, 2], "sepal_width": 3, "petal_length": 1, "petal_width": 1}', "application/json",
     400, "sepal_length", "not a mix"),
    (b'[[5.1, 3.5, 1.4, [0.2]]]', "application/json", 400, "[0][3]", "single value"),
    (b"[[5.1, NaN, 1.4, 0.2]]", "application/json", 400, "$", "NaN"),
])
def test_bad_invoke_input_is_a_4xx_naming_the_problem(ready: dict, body: bytes, content_type: str, status: int,
                                                       field: str, words: str) -> None:
    port = ready["port"]
    reply = request(port, "POST", "/", body, content_type=content_type)
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json["field"] == field and words in reply.json["error"], reply.json
    assert "Traceback" not in reply.body.decode()
    assert post(port, "/", ROWS).status == 200  # and the server keeps serving


@pytest.mark.parametrize(("document", "field", "words"), [
    ({"inputs": []}, "inputs", "non-empty"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3]}]}, "inputs[0].data",
     "needs 4 values"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]},
     "inputs[0].datatype", "unknown V2 datatype"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, "a", 4]}]},
     "inputs[0].data", "must be float64"),
    ({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [1, 2, 3, 4, 5]}]},
     "inputs[0].shape", "takes 4"),
    ({"inputs": [{"name": "x", "shape": [4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
     "inputs[0].shape", "2-D"),
    ({"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": [1]},
                 {"name": "sepal_width", "shape": [1], "datatype": "FP64", "data": [1]}]}, "inputs",
     "missing input tensor 'petal_length'"),
    ({"id": 7, "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, "id",
     "string"),
])
def test_bad_v2_requests_are_400_naming_the_field(ready: dict, document: dict, field: str, words: str) -> None:
    port = ready["port"]
    reply = post(port, "/v2/models/iris/infer", document)
    assert reply.status == 400, reply.body
    assert reply.json["field"] == field and words in reply.json["error"], reply.json
    good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROWS[0]}]}
    assert post(port, "/v2/models/iris/infer", good).status == 200


def test_unknown_routes_models_and_methods_are_json(ready: dict) -> None:
    port = ready["port"]
    missing = get(port, "/nope")
    assert missing.status == 404 and missing.json["code"] == "not_found" and "POST /" in missing.json["error"]
    other = post(port, "/v2/models/other/infer", {"inputs": []})
    assert other.status == 404 and "serves 'iris'" in other.json["error"] and other.json["function"] == "other"
    wrong = get(port, "/")
    assert wrong.status == 405 and wrong.json["code"] == "method_not_allowed" and "POST" in wrong.headers["allow"]
    assert get(port, "/v2/health/live").json == {"live": True}


def test_metrics_count_requests_by_status_and_report_the_load(ready: dict) -> None:
    port = ready["port"]
    post(port, "/", ROWS)
    request(port, "POST", "/", b"{", content_type="application/json")
    text = get(port, "/metrics").body.decode()
    assert 'hydro_function_requests_total{code="200",endpoint="/",function="iris"}' in text
    assert 'hydro_function_requests_total{code="400",endpoint="/",function="iris"}' in text
    assert "hydro_function_request_duration_seconds_bucket" in text
    assert "hydro_function_process_start_time_seconds" in text
    load = next(line for line in text.splitlines() if line.startswith("hydro_function_model_load_seconds{"))
    assert float(load.split()[-1]) > 0
    assert 'hydro_function_ready{function="iris"} 1.0' in text


# ---- a binary classifier with a signature and named outputs; small body limit ---------------------


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory, iris_data: tuple[np.ndarray, np.ndarray]) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("sk-binary")
    x, y = iris_data
    target = (y == 1).astype(int)
    model = LogisticRegression(max_iter=1000).fit(x, target)
    joblib.dump(model, work / "model.pkl")
    spec = {
        "name": "versicolor", "lang": "sklearn", "model": str(work),
        "options": {"outputs": {"match": "label", "probability": "proba:1"}},
        "signature": {
            "inputs": [{"name": f, "dtype": "float64", "shape": [-1]} for f in FEATURES],
            "outputs": [{"name": "match", "dtype": "bool", "shape": [-1]},
                        {"name": "probability", "dtype": "float64", "shape": [-1]}],
        },
    }
    port = free_port()
    proc = start_runtime(spec, port, work, base_env(work / "home", {"HYDRO_MAX_BODY_BYTES": "4096"}))
    try:
        proc.wait_ready()
        yield {"port": port, "model": model}
    finally:
        proc.stop()


def test_named_outputs_are_records_cast_to_the_signature(binary: dict) -> None:
    port, model = binary["port"], binary["model"]
    records = [dict(zip(FEATURES, row, strict=True)) for row in ROWS]
    reply = post(port, "/", records)
    assert reply.status == 200, reply.body
    labels = model.predict(np.array(ROWS))
    proba = model.predict_proba(np.array(ROWS))[:, 1]
    assert [r["match"] for r in reply.json] == [bool(v) for v in labels]
    assert all(isinstance(r["match"], bool) for r in reply.json)
    assert [r["probability"] for r in reply.json] == pytest.approx(proba.tolist())
    v2 = post(port, "/v2/models/versicolor/infer", {"inputs": [
        {"name": "x", "shape": [3, 4], "datatype": "FP64", "data": ROWS}]}).json
    outs = {t["name"]: t for t in v2["outputs"]}
    assert outs["match"]["datatype"] == "BOOL" and outs["match"]["data"] == [bool(v) for v in labels]
    assert outs["probability"]["data"] == pytest.approx(proba.tolist())


@pytest.mark.parametrize(("payload", "field", "words"), [
    ([{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}], "[0].petal_width", "missing field"),
    ([{"sepal_length": "long", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}], "[0].sepal_length",
     "must be float64"),
    ([{"sepal_length": [5.1], "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}], "[0].sepal_length",
     "single value"),
    ([[5.1, 3.5, 1.4]], "[0]", "4 inputs"),
    ([[5.1, 3.5, 1.4, True]], "[0].petal_width", "must be float64"),
])
def test_signature_violations_are_400_naming_the_field(binary: dict, payload: object, field: str,
                                                       words: str) -> None:
    reply = post(binary["port"], "/", payload)
    assert reply.status == 400 and reply.json["field"] == field and words in reply.json["error"], reply.json
    assert post(binary["port"], "/", ROWS).status == 200


def test_body_over_the_limit_is_413_json(binary: dict) -> None:
    big = b"[" + b",".join([b"[5.1, 3.5, 1.4, 0.2]"] * 400) + b"]"
    reply = request(binary["port"], "POST", "/", big)
    assert reply.status == 413 and reply.json["code"] == "payload_too_large" and "4096" in reply.json["error"]
    assert post(binary["port"], "/", ROWS).status == 200


# ---- the plain iris model: time from process start to ready, predict_proba ----------------------


def test_startup_to_ready_and_predict_proba(tmp_path: Path, iris_model_file: Path,
                                            iris_data: tuple[np.ndarray, np.ndarray],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(iris_model_file, tmp_path / "model.joblib")
    spec = {"name": "iris-proba", "lang": "sklearn", "model": str(tmp_path / "model.joblib"),
            "options": {"method": "predict_proba"}}
    port = free_port()
    proc: Proc = start_runtime(spec, port, tmp_path, base_env(tmp_path / "home"))
    try:
        proc.wait_ready()
        elapsed = time.monotonic() - proc.started
        model = joblib.load(iris_model_file)
        reply = post(port, "/", ROWS)
        np.testing.assert_allclose(reply.json, model.predict_proba(np.array(ROWS)))
        v2 = post(port, "/v2/models/iris-proba/infer", {"inputs": [
            {"name": "x", "shape": [3, 4], "datatype": "FP64", "data": ROWS}]}).json
        assert v2["outputs"][0]["name"] == "predict_proba" and v2["outputs"][0]["shape"] == [3, 3]
        with capsys.disabled():
            print(f"\n[measure] sklearn iris: process start -> /_/ready 200 in {elapsed:.2f}s")
    finally:
        proc.stop()
