"""The seed's three-framework pipeline end to end: Python features -> Spark ML -> Keras, through the real gateway.

``examples/multi-framework/train.py`` trains and uploads both models (into this module's store), the
example's ``stack.yml`` is deployed as it is, and the original README's request is answered: an iPhone 5
against an aquarium pump (no match), and against itself (match).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.stack import load_stack
from tests.frameworks.helpers import TIMINGS

pytestmark = pytest.mark.heavy
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "multi-framework"
SEED_REQUEST = REPO / "functions" / "pm-features" / "product-matching-request.json"


@pytest.fixture(scope="module")
def pipeline(fw_gateway: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("mf")
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(EXAMPLE / "train.py"), "--out", str(out)], capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    TIMINGS["multi-framework training (features, Spark, Keras; s)"] = round(time.monotonic() - started, 1)
    result = json.loads(done.stdout[done.stdout.index("{"):])
    stack = load_stack(EXAMPLE / "stack.yml")
    for spec in stack.functions.values():
        fw_gateway.deploy(spec.resolved(EXAMPLE))
    return result


def test_the_three_framework_pipeline_answers_the_seed_request(fw_gateway: Any, pipeline: dict[str, Any]) -> None:
    assert set(pipeline["uploaded"]) == {"mf-spark", "mf-keras"}
    request = json.loads(SEED_REQUEST.read_text())
    started = time.monotonic()
    status, headers, body = fw_gateway.invoke("multi-framework", request, timeout=240)
    TIMINGS["multi-framework first request (s)"] = round(time.monotonic() - started, 2)
    assert status == 200, body
    assert [r["match"] for r in body] == [False, True], body
    assert all(0.0 <= r["probability"] <= 1.0 for r in body)
    assert body[0]["probability"] < 0.5 < body[1]["probability"]
    stages = headers.get("X-Hydro-Stage-Timings", "")
    assert all(name in stages for name in ("mf-features", "mf-spark", "mf-keras")), headers


def test_a_missing_field_is_refused_naming_it(fw_gateway: Any, pipeline: dict[str, Any]) -> None:
    request = json.loads(SEED_REQUEST.read_text())
    del request[1]["Title2"]
    status, _, body = fw_gateway.invoke("multi-framework", request, timeout=240)
    assert status == 400 and "Title2" in body["field"], body
