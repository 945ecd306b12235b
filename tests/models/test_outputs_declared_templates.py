"""What is advertised is what is returned (issue 14 point 12) for the statsmodels and Spark templates.

A signature that declares outputs, with no ``options.outputs``: ``POST /`` answers records of the
declared outputs, V2 infer returns one tensor per declared output (cast to its dtype), and V2
metadata advertises exactly those. Real models fitted here: a statsmodels OLS served in-process
through the runtime's Flask app, and a tiny Spark PipelineModel (trained by a subprocess, served by
a real runtime process so its JVM dies with it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hydro_serving.store import open_store
from tests.conftest import free_port
from tests.runtime.helpers import base_env, get, post, start_runtime

REGRESSORS = [{"name": "size", "dtype": "float64", "shape": [-1]}, {"name": "rooms", "dtype": "float64", "shape": [-1]}]
ROWS = [[1.0, 2.0], [3.5, 1.0]]



def _agree(meta: dict[str, Any], infer: dict[str, Any]) -> None:
    """Names and datatypes equal, in order; each shape fits the advertised one (-1 is any size)."""
    assert [(o["name"], o["datatype"]) for o in infer["outputs"]] == [(o["name"], o["datatype"])
                                                                       for o in meta["outputs"]], (meta, infer)
    for advertised, returned in zip(meta["outputs"], infer["outputs"], strict=True):
        assert len(advertised["shape"]) == len(returned["shape"]), (advertised, returned)
        assert all(a in (-1, r) for a, r in zip(advertised["shape"], returned["shape"], strict=True))


@pytest.fixture(scope="module")
def ols(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    import statsmodels.api as sm

    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 2))
    y = 1.5 + 2.0 * x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.1, size=60)
    results = sm.OLS(y, sm.add_constant(x)).fit()
    path = tmp_path_factory.mktemp("ols") / "model.pickle"
    results.save(str(path))
    return path, results


V2_ROWS = {"inputs": [{"name": "size", "datatype": "FP64", "shape": [2], "data": [1.0, 3.5]},
                      {"name": "rooms", "datatype": "FP64", "shape": [2], "data": [2.0, 1.0]}]}


@pytest.mark.parametrize(("outputs", "columns"), [
    ([{"name": "price", "dtype": "float64", "shape": [-1]}], {"price": "mean"}),  # one output: the mean
    ([{"name": "mean", "dtype": "float32", "shape": [-1]},
      {"name": "mean_ci_upper", "dtype": "float64", "shape": [-1]}],
     {"mean": "mean", "mean_ci_upper": "mean_ci_upper"}),
])
def test_statsmodels_declared_outputs_are_the_answer(serve: Any, ols: tuple[Path, Any], outputs: list[Any],
                                                     columns: dict[str, str]) -> None:
    path, results = ols
    open_store().upload(path, "prices", signature={"inputs": REGRESSORS, "outputs": outputs})
    client = serve({"name": "prices", "lang": "statsmodels", "model": "prices:1"})
    frame = results.get_prediction(np.array([[1.0, *row] for row in ROWS])).summary_frame()

    answer = client.post("/", json=ROWS).get_json()
    assert [set(row) for row in answer] == [set(columns)] * 2, answer
    for name, column in columns.items():
        assert [row[name] for row in answer] == pytest.approx(list(frame[column]), rel=1e-6)

    meta = client.get("/v2/models/prices").get_json()
    assert [o["name"] for o in meta["outputs"]] == list(columns)
    infer = client.post("/v2/models/prices/infer", json=V2_ROWS).get_json()
    _agree(meta, infer)
    assert infer["outputs"][0]["data"] == pytest.approx(list(frame[columns[infer["outputs"][0]["name"]]]), rel=1e-6)


def test_statsmodels_output_that_is_no_column_fails_the_load_naming_it(serve: Any, ols: tuple[Path, Any]) -> None:
    """A hostile or mistaken manifest: two outputs, one of them no column the model gives."""
    open_store().upload(ols[0], "odd", signature={"inputs": REGRESSORS, "outputs": [
        {"name": "mean", "dtype": "float64", "shape": [-1]}, {"name": "score", "dtype": "float64", "shape": [-1]}]})
    client = serve({"name": "odd", "lang": "statsmodels", "model": "odd:1"}, ready=False)
    reply = client.get("/_/ready")
    assert reply.status_code == 503
    assert "signature.outputs[1] (score)" in reply.get_json()["error"]
    assert "Traceback" not in reply.get_data(as_text=True)


def test_statsmodels_without_declared_outputs_answers_one_mean_per_row(serve: Any, ols: tuple[Path, Any]) -> None:
    """Backwards compatibility: nothing declared, a bare list of means."""
    client = serve({"name": "prices", "lang": "statsmodels", "model": str(ols[0])})
    answer = client.post("/", json=ROWS).get_json()
    assert isinstance(answer, list) and all(isinstance(v, float) for v in answer), answer


@pytest.mark.heavy
@pytest.mark.process
def test_spark_declared_outputs_are_the_answer(tmp_path: Path) -> None:
    trained = tmp_path / "trained"
    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "frameworks" / "spark_train.py"),
                           str(trained)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((trained / "expected.json").read_text())
    signature = {"inputs": [{"name": "x1", "dtype": "float64", "shape": [-1]},
                            {"name": "x2", "dtype": "float64", "shape": [-1]},
                            {"name": "cat", "dtype": "string", "shape": [-1]}],
                 "outputs": [{"name": "approved", "dtype": "bool", "shape": [-1]},
                             {"name": "score", "dtype": "float64", "shape": [-1]}]}
    port = free_port()
    proc = start_runtime({"name": "loans", "lang": "spark", "model": str(trained / "model"), "signature": signature},
                         port, tmp_path, base_env(tmp_path / "home"))
    try:
        proc.wait_ready()
        reply = post(port, "/", info["rows"])
        assert reply.status == 200, reply.body
        want = [{"approved": bool(e["prediction"]), "score": e["probability"][1]} for e in info["expected"]]
        assert [row["approved"] for row in reply.json] == [w["approved"] for w in want], reply.json
        assert [row["score"] for row in reply.json] == pytest.approx([w["score"] for w in want], rel=1e-9)
        assert all(set(row) == {"approved", "score"} for row in reply.json)

        meta = get(port, "/v2/models/loans").json
        assert [o["name"] for o in meta["outputs"]] == ["approved", "score"]
        rows = info["rows"]
        infer = post(port, "/v2/models/loans/infer", {"inputs": [
            {"name": "x1", "shape": [len(rows)], "datatype": "FP64", "data": [r["x1"] for r in rows]},
            {"name": "x2", "shape": [len(rows)], "datatype": "FP64", "data": [r["x2"] for r in rows]},
            {"name": "cat", "shape": [len(rows)], "datatype": "BYTES", "data": [r["cat"] for r in rows]}]})
        assert infer.status == 200, infer.body
        _agree(meta, infer.json)
        assert infer.json["outputs"][0]["data"] == [w["approved"] for w in want]
    finally:
        proc.stop()
