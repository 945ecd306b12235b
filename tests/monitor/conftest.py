"""Shared helpers of the monitor tests: function specs from stack.yml text, offered exchanges."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hydro_serving.monitor.sampler import Offered, tap
from hydro_serving.stack import FunctionSpec, parse_stack

SCORING = """
version: 1.0
provider: {name: hydro}
functions:
  scoring:
    lang: python3
    handler: ./scoring
    monitoring: {sample: 1.0, window: {rows: 200, time: 1h}, alert: "ALERT"}
    signature:
      inputs:
        - {name: x, dtype: float64, shape: [-1]}
        - {name: y, dtype: float64, shape: [-1]}
        - {name: plan, dtype: string, shape: [-1]}
      outputs:
        - {name: label, dtype: bool, shape: [-1]}
        - {name: score, dtype: float64, shape: [-1]}
"""


def scoring_spec(alert: str = "http://127.0.0.1:9/none", rows: int = 200, sample: float = 1.0) -> FunctionSpec:
    text = SCORING.replace("ALERT", alert).replace("rows: 200", f"rows: {rows}").replace("sample: 1.0",
                                                                                       f"sample: {sample}")
    return parse_stack(text).functions["scoring"]


def exchange(spec: FunctionSpec, rows: list[dict[str, Any]], outputs: list[dict[str, Any]] | None = None,
             status: int = 200, request_id: str | None = None, ts: float = 0.0,
             timings: str | None = None) -> Offered:
    t = tap({"X-Request-Id": request_id} if request_id else {})
    if outputs is None:
        outputs = [{"label": isinstance(r["x"], float) and r["x"] > 0, "score": 0.5} for r in rows]
    response = json.dumps(outputs)
    return Offered(ts, spec.name, t.request_id, t.trace_id, json.dumps(rows).encode(), response.encode(), status,
                   timings, spec)


@pytest.fixture
def spec() -> FunctionSpec:
    return scoring_spec()
