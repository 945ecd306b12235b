"""The runtime's module-level route handlers, in process through Flask's test client (no gunicorn, no socket).

The end-to-end tests beside this one run real processes; these pin down what ``create_app`` wires
for each kind of template: the routes, the adapter's rules (raw bodies and sub-paths only for
functions), 503 until loaded, and errors as JSON naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.stack import function_from_dict

HANDLER = '''\
def handle(payload, context):
    context.response_headers["X-Path"] = context.path
    if payload == "boom":
        raise RuntimeError("secret detail")
    return {"got": payload, "method": context.method}
'''


def app_for(tmp_path: Path, *, start: bool = True) -> Flask:
    folder = tmp_path / "fn"
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(HANDLER)
    spec = function_from_dict({"name": "echo", "lang": "python3", "handler": str(folder)})
    app = create_app(spec, RuntimeConfig.from_env(spec), start_loading=start)
    if start:
        app.extensions["hydro_runtime"].loader.wait(30)
    return app


@pytest.fixture
def client(tmp_path: Path) -> Any:
    return app_for(tmp_path).test_client()


def test_a_function_takes_any_method_sub_path_and_raw_body(client: Any) -> None:
    reply = client.put("/orders/7?x=1", data=b"plain text", content_type="text/plain")
    assert reply.status_code == 200, reply.json
    assert reply.json == {"got": "plain text", "method": "PUT"}
    assert reply.headers["X-Path"] == "/orders/7"


def test_a_handler_failure_is_a_500_without_the_detail(client: Any) -> None:
    reply = client.post("/", json="boom")
    assert reply.status_code == 500
    assert "secret detail" not in reply.get_data(as_text=True) and "Traceback" not in reply.get_data(as_text=True)
    assert client.post("/", json=1).status_code == 200  # the function keeps serving


def test_health_metrics_and_v2_routes(client: Any) -> None:
    assert client.get("/_/health").json["state"] == "ready"
    assert client.get("/_/ready").json["status"] == "ready"
    assert client.get("/v2/health/ready").json == {"ready": True}
    assert client.get("/v2/models/echo").json["platform"] == "python3"
    assert client.get("/v2/models/other").status_code == 404
    assert b"hydro_function_ready" in client.get("/metrics").data
    infer = client.post("/v2/models/echo/infer", json={"inputs": [
        {"name": "x", "datatype": "INT64", "shape": [2], "data": [1, 2]}]})
    assert infer.status_code == 200, infer.json


def test_malformed_requests_are_4xx_json_naming_the_field(client: Any) -> None:
    assert client.get("/_/ready?wait=soon").json["field"] == "wait"
    bad = client.post("/v2/models/echo/infer", data=b"{not json", content_type="application/json")
    assert bad.status_code == 400 and bad.json["error"]
    media = client.post("/v2/models/echo/infer", data=b"x", content_type="text/plain")
    assert media.status_code == 415 and media.json["field"] == "Content-Type"


def test_not_loaded_is_503_and_a_model_takes_only_post_on_root(tmp_path: Path) -> None:
    waiting = app_for(tmp_path, start=False).test_client()
    assert waiting.post("/", json=1).status_code == 503
    assert waiting.get("/_/ready").json["details"]["status"] == "loading"
    spec = function_from_dict({"name": "m", "lang": "sklearn", "model": str(tmp_path / "none.joblib")})
    model = create_app(spec, RuntimeConfig.from_env(spec), start_loading=False).test_client()
    assert model.get("/").status_code == 405 and "POST" in model.get("/").headers["Allow"]
    assert model.post("/sub/path", json=1).status_code == 404
