"""A pipeline deployed on a real gateway advertises stage 1's inputs and the last stage's outputs, the
latter coming from the store manifest of a model the function reads from its own store (issue 14 point 12).

Real gateway (local provider), real replicas of a python3 stage, an sklearn stage and the router.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydro_serving.store import open_store
from tests.gateway_fixtures import gateway_factory, write_handler  # noqa: F401 - the fixture

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
HANDLER = '''
def handle(payload, context):
    """Scale each record's one number into the four iris measurements."""
    return [{"sepal_length": 5.1 * r["size"], "sepal_width": 3.5 * r["size"], "petal_length": 1.4 * r["size"],
             "petal_width": 0.2 * r["size"]} for r in payload]
'''
FEATURE_FIELDS = [{"name": f, "dtype": "float64", "shape": [-1]} for f in FEATURES]


def test_pipeline_metadata_and_answer_follow_the_stages_signatures(gateway_factory: Any,  # noqa: F811
                                                                   iris_model_file: Path, tmp_path: Path) -> None:
    store_url = f"file://{tmp_path / 'fn-store'}"
    open_store(store_url).upload(iris_model_file, "wine", signature={
        "inputs": FEATURE_FIELDS,
        "outputs": [{"name": "cultivar", "dtype": "int64", "shape": [-1]},
                    {"name": "probability", "dtype": "float64", "shape": [-1, 3]}]})
    gw = gateway_factory("--discover-interval", "0")
    gw.deploy(gw.python_spec("features", write_handler(tmp_path / "features", HANDLER), signature={
        "inputs": [{"name": "size", "dtype": "float64", "shape": [-1]}], "outputs": FEATURE_FIELDS}))
    gw.deploy({"name": "wine", "lang": "sklearn", "model": "wine:1", "environment": {"HYDRO_STORE": store_url}})
    gw.deploy({"name": "pipe", "lang": "router", "chain": ["features", "wine"]})

    status, _, meta = gw.invoke("pipe", None, path="/v2/models/pipe", method="GET")
    assert status == 200, meta
    assert meta["inputs"] == [{"name": "size", "datatype": "FP64", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "cultivar", "datatype": "INT64", "shape": [-1]},
                               {"name": "probability", "datatype": "FP64", "shape": [-1, 3]}]
    status, _, answer = gw.invoke("pipe", [{"size": 1.0}])
    assert status == 200, answer
    assert [set(row) for row in answer] == [{"cultivar", "probability"}] and answer[0]["cultivar"] == 0
    status, _, refused = gw.invoke("pipe", [{"size": None}])  # hostile: null where nothing is nullable
    assert status == 400 and refused["field"] == "[0].size", refused
