"""Pipelines end to end: the real gateway process starts real replicas (runtime + router template).

Client -> gateway -> router replica -> gateway -> stage replicas, all real processes on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

STAGE = '''
import os
import time

# a model-sized load: the runtime imports this in its loader, so the replica is not ready before it ends
time.sleep(float(os.environ.get("LOAD_SLEEP", "0")))
NAME = os.environ["STAGE_NAME"]


def handle(payload, context):
    """Append this stage's name to the trail; crash or refuse when the payload asks this stage to."""
    data = payload if isinstance(payload, dict) else {"input": payload}
    if data.get("crash") == NAME:
        os._exit(1)
    if data.get("reject") == NAME:
        from hydro_serving.errors import ValidationError

        raise ValidationError(f"{NAME} refuses this input", field="reject")
    return {**data, "trail": [*data.get("trail", []), NAME]}
'''


def stage_spec(gw: Any, folder: Path, name: str, load_sleep: float = 0.0, **kw: Any) -> dict[str, Any]:
    return gw.python_spec(name, folder, environment={"STAGE_NAME": name, "LOAD_SLEEP": str(load_sleep)}, **kw)


@pytest.fixture
def stage_dir(tmp_path: Path, real_gateway: Any) -> Path:
    return real_gateway.write_handler(tmp_path / "stage", STAGE)


def router_spec(name: str, chain: list, **kw: Any) -> dict[str, Any]:
    return {"name": name, "lang": "router", "chain": chain, "scale": {"min": 0, "max": 1, "idle": 300}, **kw}


def timings_of(headers: dict[str, str]) -> list[dict[str, Any]]:
    value = next(v for k, v in headers.items() if k.lower() == "x-hydro-stage-timings")
    return json.loads(value)


def test_cold_pipeline_costs_about_one_cold_start(real_gateway: Any, stage_dir: Path) -> None:
    gw = real_gateway
    for name in ("a", "b", "c"):
        gw.deploy(stage_spec(gw, stage_dir, name, load_sleep=1.0))
    gw.deploy(router_spec("pipe", ["a", "b", "c"]))
    status, headers, body = gw.invoke("pipe", {"trail": []}, timeout=90)
    assert status == 200, body
    assert body["trail"] == ["a", "b", "c"]
    timings = timings_of(headers)
    assert [t["variant"] for t in timings] == ["a", "b", "c"]
    # one cold start per stage ...
    assert [t["cold_start"] for t in timings] == [True, True, True], timings
    # ... started in parallel: b and c were started by the router's prewarm while a was loading, so
    # they did not pay their own 1 s load when called (started on demand they would have to)
    assert timings[0]["ms"] >= 1000, timings
    assert [t.get("prewarmed") for t in timings[1:]] == [True, True], timings
    assert timings[1]["ms"] < 1000 and timings[2]["ms"] < 1000, timings
    # one replica per stage (no duplicate starts from prewarm + call), and per-stage gateway metrics
    for name in ("a", "b", "c"):
        assert len(gw.replica_pids(name)) == 1
    # (stage 2 may have been called directly, its prewarmed replica being ready: the router reports such
    # calls with its next endpoint lease, within about a second)
    gw.wait_for(lambda: gw.metric("hydro_pipeline_stage_duration_seconds_count", pipeline="pipe", stage="2",
                                  function="b") == 1, timeout=10, what="stage 2 in the per-stage series")
    # warm now: no cold start, no prewarm
    status, headers, body = gw.invoke("pipe", {"trail": []})
    assert status == 200
    assert [t["cold_start"] for t in timings_of(headers)] == [False, False, False]


def test_weights_90_10_over_2000_requests_run_only_the_chosen_variant(real_gateway: Any, stage_dir: Path) -> None:
    gw = real_gateway
    for name in ("v1", "v2"):
        gw.deploy(stage_spec(gw, stage_dir, name))
    gw.deploy(router_spec("exp", [{"variants": {"v1": 90, "v2": 10}}],
                          scale={"min": 0, "max": 1, "idle": 300, "concurrency": 16}))
    # warm every replica first so the count below is about routing, not start-up
    while len(gw.replica_pids("v1")) == 0 or len(gw.replica_pids("v2")) == 0:
        assert gw.invoke("exp", {})[0] == 200

    def one(_: int) -> str:
        status, _headers, body = gw.invoke("exp", {})
        assert status == 200, body
        return body["trail"][0]

    before = {n: gw.metric("hydro_gateway_invocations_total", function=n, status="200") for n in ("v1", "v2")}
    with ThreadPoolExecutor(max_workers=8) as pool:
        chosen = Counter(pool.map(one, range(2000)))
    assert chosen["v1"] + chosen["v2"] == 2000

    def counted() -> dict[str, float]:
        return {n: gw.metric("hydro_gateway_invocations_total", function=n, status="200") - before[n]
                for n in ("v1", "v2")}

    # direct calls (the router calls warm replicas itself) reach the gateway's counts with its next lease
    gw.wait_for(lambda: counted() == {n: chosen[n] for n in ("v1", "v2")}, timeout=10,
                what=f"the counts ({counted()} for {chosen})")
    after = {n: before[n] + counted()[n] for n in ("v1", "v2")}
    assert 0.87 <= chosen["v1"] / 2000 <= 0.93, chosen
    # the gateway saw exactly one variant call per request, and the same split
    assert after["v1"] - before["v1"] == chosen["v1"]
    assert after["v2"] - before["v2"] == chosen["v2"]


def test_incompatible_chain_is_refused_at_deploy(real_gateway: Any, stage_dir: Path) -> None:
    gw = real_gateway
    gw.deploy(stage_spec(gw, stage_dir, "feat", signature={
        "inputs": [{"name": "Title1", "dtype": "string", "shape": [-1]}],
        "outputs": [{"name": "features", "dtype": "float64", "shape": [-1, 8]}]}))
    gw.deploy(stage_spec(gw, stage_dir, "clf", signature={
        "inputs": [{"name": "vector", "dtype": "float64", "shape": [-1, 8]}],
        "outputs": [{"name": "match", "dtype": "bool", "shape": [-1]}]}))
    spec = router_spec("bad-pipe", ["feat", "clf"])
    status, out = gw.admin("POST", "/system/functions", {"service": "bad-pipe", "hydro": spec})
    assert status == 400, out
    assert out["field"] == "vector"
    assert "stage 1 (feat)" in out["error"] and "stage 2 (clf)" in out["error"]
    status, _ = gw.admin("GET", "/system/function/bad-pipe")
    assert status == 404


def test_pipeline_failures_through_the_gateway(real_gateway: Any, stage_dir: Path) -> None:
    gw = real_gateway
    signature = {"inputs": [{"name": "Title1", "dtype": "string"}], "outputs": []}
    gw.deploy(stage_spec(gw, stage_dir, "first", signature=signature))
    for name in ("second", "cand"):
        gw.deploy(stage_spec(gw, stage_dir, name))
    gw.deploy(router_spec("flow", ["first", {"function": "second", "shadow": ["cand"]}],
                          options={"breaker_failures": 2, "breaker_cooldown": "60s"}))
    # a missing field: 400 naming it, before any stage runs (none has a replica afterwards)
    status, _, body = gw.invoke("flow", {"trail": []})
    assert status == 400, body
    assert body["field"] == "Title1" and body["function"] == "flow"
    assert gw.replica_pids("first") == []
    # a failing shadow never changes the response (the shadow crashes its replica)
    status, _, body = gw.invoke("flow", {"Title1": "x", "crash": "cand"})
    assert status == 200, body
    assert body["trail"] == ["first", "second"]
    # a stage that answers 400 yields 400 naming it
    status, _, body = gw.invoke("flow", {"Title1": "x", "reject": "second"})
    assert status == 400, body
    assert body["stage"] == "second" and body["field"] == "reject"
    # a killed stage yields 502 naming it; after two failures the breaker answers 503 at once
    status, _, body = gw.invoke("flow", {"Title1": "x", "crash": "second"})
    assert status == 502, body
    assert body["stage"] == "second" and "stage 2 (second)" in body["error"]
    # the second failure: 502 again (the gateway holds the call until the replaced worker is ready)
    status, _, body = gw.invoke("flow", {"Title1": "x", "crash": "second"})
    assert status == 502, body
    assert body["stage"] == "second"
    status, headers, body = gw.invoke("flow", {"Title1": "x"})
    assert status == 503, body
    assert body["stage"] == "second" and body["details"]["breaker"] == "open"
    assert any(k.lower() == "retry-after" for k in headers)
