"""The statsmodels template (the docs' "Add a template" example) served by a real runtime process.

A tiny OLS and a tiny Logit are fitted here on synthetic data; answers are compared with the
fitted results' own ``predict``/``get_prediction``, and every bad request is a 400 naming the
field, followed by a good one to show the replica keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from hydro_serving.errors import ConfigError
from hydro_serving.runtime.loader import import_entrypoint
from hydro_serving.sdk import LoadContext
from hydro_serving.stack import function_from_dict
from hydro_serving.templates import get_template
from tests.conftest import free_port
from tests.runtime.helpers import Proc, base_env, get, post, start_runtime, wait_for

ROWS = [{"size": 1.0, "rooms": 2.0}, {"size": 3.5, "rooms": 1.0}]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("statsmodels")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 2))
    y = 1.5 + 2.0 * x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.1, size=60)
    ols = sm.OLS(y, sm.add_constant(pd.DataFrame(x, columns=["size", "rooms"]))).fit()
    (work / "ols").mkdir()
    ols.save(str(work / "ols" / "model.pickle"))
    labels = (x[:, 0] + rng.normal(scale=0.5, size=60) > 0).astype(float)
    logit = sm.Logit(labels, sm.add_constant(x)).fit(disp=0)
    logit.save(str(work / "logit.pickle"))
    return {"dir": work, "ols": ols, "logit": logit}


def serve(fitted: dict[str, Any], name: str, model: Path, **spec: Any) -> Proc:
    port = free_port()
    env = base_env(fitted["dir"] / f"home-{name}")
    return start_runtime({"name": name, "lang": "statsmodels", "model": str(model), **spec}, port, fitted["dir"], env)


@pytest.fixture(scope="module")
def ols_server(fitted: dict[str, Any]) -> Iterator[Proc]:
    proc = serve(fitted, "prices", fitted["dir"] / "ols",
                 options={"outputs": ["mean", "mean_ci_lower", "mean_ci_upper"], "alpha": 0.1})
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_records_get_the_model_s_means_and_intervals(ols_server: Proc, fitted: dict[str, Any]) -> None:
    reply = post(ols_server.port, "/", ROWS)
    assert reply.status == 200, reply.body
    frame = fitted["ols"].get_prediction(np.array([[1, 1.0, 2.0], [1, 3.5, 1.0]])).summary_frame(alpha=0.1)
    answer = reply.json
    assert [round(r["mean"], 9) for r in answer] == [round(v, 9) for v in frame["mean"]]
    assert [round(r["mean_ci_lower"], 9) for r in answer] == [round(v, 9) for v in frame["mean_ci_lower"]]
    assert all(r["mean_ci_lower"] < r["mean"] < r["mean_ci_upper"] for r in answer)


def test_the_model_s_regressors_become_its_signature(ols_server: Proc) -> None:
    meta = get(ols_server.port, "/v2/models/prices").json
    assert [i["name"] for i in meta["inputs"]] == ["size", "rooms"]  # the constant is the template's business


@pytest.mark.parametrize(("payload", "field"), [
    ([{"size": 1.0}], "[0].rooms"),
    ([{"size": "big", "rooms": 1}], "[0].size"),
    ({"rows": 3}, None),
    ("not json rows", "$"),
])
def test_bad_input_is_a_400_naming_the_field_and_the_replica_keeps_serving(ols_server: Proc, payload: Any,
                                                                           field: str | None) -> None:
    reply = post(ols_server.port, "/", payload)
    assert reply.status == 400, reply.body
    body = reply.json
    assert body["error"] and "Traceback" not in reply.body.decode()
    if field is not None:
        assert field in body["field"], body
    assert post(ols_server.port, "/", ROWS[:1]).status == 200


def test_a_logit_answers_probabilities_by_default(fitted: dict[str, Any]) -> None:
    proc = serve(fitted, "churn", fitted["dir"] / "logit.pickle")
    try:
        proc.wait_ready()
        reply = post(proc.port, "/", [[0.3, -1.0], [2.0, 0.5]])
        assert reply.status == 200, reply.body
        want = fitted["logit"].predict(np.array([[1, 0.3, -1.0], [1, 2.0, 0.5]]))
        assert np.allclose(reply.json, want)
        infer = post(proc.port, "/v2/models/churn/infer", {"inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [2], "data": [0.3, 2.0]},
            {"name": "x2", "datatype": "FP64", "shape": [2], "data": [-1.0, 0.5]}]})
        assert infer.status == 200, infer.body
        assert np.allclose(infer.json["outputs"][0]["data"], want)
    finally:
        proc.stop()


def test_an_interval_the_model_does_not_give_fails_the_load_naming_the_option(fitted: dict[str, Any]) -> None:
    """A Logit has no observation intervals: the load fails (503 with the reason), no request 500s."""
    spec = function_from_dict({"name": "churn", "lang": "statsmodels", "model": str(fitted["dir"] / "logit.pickle"),
                               "options": {"outputs": ["obs_ci_lower"]}})
    model = import_entrypoint(get_template("statsmodels"))()
    with pytest.raises(ConfigError) as caught:
        model.load(Path(spec.model or ""), LoadContext(spec=spec, model_dir=None, handler_dir=None))
    assert caught.value.field == "options.outputs"


def test_a_hostile_option_value_fails_the_load_and_never_reaches_the_model(fitted: dict[str, Any]) -> None:
    proc = serve(fitted, "hostile", fitted["dir"] / "ols", options={"alpha": "__import__('os')"})
    try:
        proc.wait_up()
        wait_for(lambda: get(proc.port, "/_/ready").json.get("details", {}).get("status") == "failed",
                 what="the failed load reported by /_/ready")
        ready = get(proc.port, "/_/ready")
        assert ready.status == 503 and "options.alpha" in ready.json["error"], ready.body
        assert post(proc.port, "/", ROWS).status == 503
    finally:
        proc.stop()
