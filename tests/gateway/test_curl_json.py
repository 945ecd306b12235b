"""Plain ``curl -d '{...}'`` (form-encoded by curl's default) reaches models and functions as JSON (issue 14 point 2).

Real curl, a real gateway, real replicas running a model trained here; the replica's runtime is
also called directly (its endpoint from the gateway's status), so both doors are covered.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

CURL = shutil.which("curl")


def curl(url: str, data: str, *extra: str) -> tuple[int, Any]:
    """``curl -s -d DATA URL``: curl's default Content-Type (application/x-www-form-urlencoded)."""
    assert CURL is not None, "curl is installed on these machines"
    out = subprocess.run([CURL, "-s", "--noproxy", "*", "-w", "\n%{http_code}", "-d", data, *extra, url],
                         capture_output=True, text=True, timeout=60, check=True)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body) if body else None


@pytest.fixture
def deployed(gateway: Any, echo_dir: Path, tmp_path: Path) -> Any:
    x, y = load_iris(return_X_y=True)
    model = tmp_path / "iris" / "model.joblib"
    model.parent.mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), model)
    gateway.deploy({"name": "iris", "lang": "sklearn", "model": str(model.parent),
                    "scale": {"min": 0, "max": 1, "idle": 300}})
    gateway.deploy(gateway.python_spec("echo", echo_dir))
    return gateway


def test_curl_d_json_is_json_at_gateway_and_runtime(deployed: Any) -> None:
    gw = deployed
    code, body = curl(f"{gw.url}/function/iris", '[[5.1, 3.5, 1.4, 0.2]]')
    assert code == 200, body
    assert body == [0], body  # setosa

    v2 = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
    code, body = curl(f"{gw.url}/function/iris/v2/models/iris/infer", json.dumps(v2))
    assert code == 200, body
    assert body["model_name"] == "iris" and body["outputs"], body

    code, body = curl(f"{gw.url}/function/echo", '{"a": 1}')
    assert code == 200, body
    assert body["echo"] == {"a": 1}  # a dict, not the bytes of a form

    # the runtime itself, without the gateway in between (a local replica listens on a unix socket)
    instance = gw.status("iris")["status"]["instances"][0]
    extra = ["--unix-socket", instance["socket"]] if instance.get("socket") else []
    endpoint = instance["endpoint"]
    assert endpoint.startswith("http://"), instance
    code, body = curl(f"{endpoint}/v2/models/iris/infer", json.dumps(v2), *extra)
    assert code == 200, body
    code, body = curl(f"{endpoint}/", '[[5.1, 3.5, 1.4, 0.2]]', *extra)
    assert code == 200, body


def test_curl_d_that_is_not_json_is_still_refused(deployed: Any) -> None:
    """Attacker's/mistaken input: a real form, or broken JSON, is a 4xx naming the field; the model keeps serving."""
    gw = deployed
    code, body = curl(f"{gw.url}/function/iris", "a=1&b=2")
    assert code == 415 and body["field"] == "Content-Type", body
    code, body = curl(f"{gw.url}/function/iris", '[[5.1, 3.5')
    assert code == 415 and "Traceback" not in json.dumps(body), body
    code, body = curl(f"{gw.url}/function/iris/v2/models/iris/infer", "x=1")
    assert code == 415 and body["field"] == "Content-Type", body
    code, body = curl(f"{gw.url}/function/echo", "a=1&b=2")  # a custom function still gets the raw bytes
    assert code == 200, body
    assert body["echo"] == "a=1&b=2"
    code, body = curl(f"{gw.url}/function/iris", '[[5.1, 3.5, 1.4, 0.2]]')
    assert code == 200, body
