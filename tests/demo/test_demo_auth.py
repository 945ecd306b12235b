"""The demo pipeline on a gateway run with ``--auth-functions``: a caller's key scoped to the pipeline is
enough (the router calls pm-features and the classifiers with its own key), no key is 401, a key for
another function is 403. Real gateway, router, python3, sklearn and ONNX replicas; models from a
real store (the test's directory store), trained once per session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hydro_serving.demo.provision import ensure_models, pipeline_name, with_store
from hydro_serving.demo.training import TrainResult
from hydro_serving.gateway.client import GatewayClient
from hydro_serving.stack import load_stack
from hydro_serving.store import open_store
from tests.gateway_fixtures import gateway_factory  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_demo_pipeline_with_a_scoped_key(trained: TrainResult, seed_body: bytes, gateway_factory: Any) -> None:  # noqa: F811
    store = open_store()
    stack = load_stack(REPO / "stack.yml", env={})
    ensure_models(store, stack, train=lambda _out: trained)
    gw = gateway_factory("--auth-functions")
    client = GatewayClient(gw.url, gw.token)
    client.deploy_stack(with_store(stack, store.url))
    pipeline = pipeline_name(stack)

    status, out = gw.admin("POST", "/system/keys", {"name": "shop", "functions": [pipeline]})
    assert status == 201, out
    key = out["key"]
    status, out = gw.admin("POST", "/system/keys", {"name": "features-only", "functions": ["pm-features"]})
    features_only = out["key"]

    status, _, body = gw.invoke(pipeline, seed_body)
    assert status == 401 and body["function"] == pipeline, body
    status, _, body = gw.invoke(pipeline, seed_body, headers={"Authorization": f"Bearer {features_only}"})
    assert status == 403 and body["function"] == pipeline, body
    status, headers, answer = gw.invoke(pipeline, seed_body, headers={"Authorization": f"Bearer {key}"},
                                        timeout=180)
    assert status == 200, answer
    assert [a["match"] for a in answer] == [False, True]
    timings = next(v for k, v in headers.items() if k.lower() == "x-hydro-stage-timings")
    assert "pm-features" in timings and "pm-classifier" in timings
    # the pipeline's key opens the pipeline only: its stages stay closed to the caller
    status, _, body = gw.invoke("pm-features", seed_body, headers={"Authorization": f"Bearer {key}"})
    assert status == 403 and body["function"] == "pm-features", body
