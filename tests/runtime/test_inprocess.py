"""The runtime's Flask app in-process: ``create_app`` driven through Flask's test client.

Nothing here starts a process: the app, its background loader and its handler threads run in
the test process, so each test builds its own app in milliseconds (and so no test depends on
another's state or order). The functions are real: a python3 handler.py written by the test,
and the sklearn template serving a model trained on iris (tests/conftest.py). Where a test
needs "still loading" or "a request in flight", the handler blocks on an event the test opens
(tests/runtime/inprocess_hooks.py). The same behaviour through a real gunicorn server is
tested in test_python3.py, test_sklearn.py and test_batching.py.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.stack.model import FunctionSpec
from tests.runtime import inprocess_hooks as hooks

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]]

HANDLER = '''\
from tests.runtime import inprocess_hooks as hooks

LOADED = []


def load(context):
    if GATED:
        hooks.wait("load")
    if FAIL_LOAD:
        raise ValueError("the weights at /secret/path are missing")
    LOADED.append(context.spec.name)


def handle(payload, context):
    op = payload.get("op") if isinstance(payload, dict) else None
    if op == "block":  # in flight until the test opens the gate
        hooks.event("started-" + payload["id"]).set()
        hooks.wait("release-" + payload["id"])
        return {"released": payload["id"]}
    if op == "boom":
        raise RuntimeError("the secret is 42")
    if op == "nan":
        return {"value": float("nan")}
    if op == "object":
        return {"value": object()}
    if op == "bytes":
        return b"\\x00\\x01raw"
    if op == "text":
        return "plain text"
    if op == "created":
        context.status = 201
        return {"created": True}
    return {"echo": payload, "path": context.path, "method": context.method, "query": dict(context.query),
            "header": context.headers.get("X-Test"), "loaded": LOADED}
'''


@pytest.fixture(autouse=True)
def _isolated_imports() -> Iterator[None]:
    """The python3 template puts the handler folder on sys.path and imports ``handler``: undo both."""
    path, handler = list(sys.path), sys.modules.get("handler")
    try:
        yield
    finally:
        hooks.open_all()  # never leave a handler thread blocked
        sys.path[:] = path
        if handler is None:
            sys.modules.pop("handler", None)
        else:
            sys.modules["handler"] = handler


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    """Every app a test built; their runtimes are shut down at teardown (as gunicorn's worker_exit does)."""
    built: list[Flask] = []
    yield built
    for app in built:
        runtime = app.extensions.get("hydro_runtime")
        if runtime is not None:
            runtime.shutdown()


def wait_ready(client: FlaskClient, limit: int = 6) -> Any:
    """``/_/ready?wait=`` (the runtime holds the request until loaded), a few times at most."""
    for _ in range(limit):
        reply = client.get("/_/ready?wait=10")
        if reply.status_code == 200:
            return reply
    raise AssertionError(f"not ready: {reply.get_json()}")


@pytest.fixture
def function(tmp_path: Path, apps: list[Flask]) -> Callable[..., FlaskClient]:
    """``function(gated=False, fail_load=False, ready=True, **limits)``: a python3 function's app and client."""

    def build(*, gated: bool = False, fail_load: bool = False, ready: bool = True, name: str = "echo",
              **limits: Any) -> FlaskClient:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "handler.py").write_text(f"GATED = {gated}\nFAIL_LOAD = {fail_load}\n" + HANDLER)
        spec = FunctionSpec.from_dict({"name": name, "lang": "python3", "handler": str(folder)})
        app = create_app(spec, RuntimeConfig(load_failure_exit_after=None, **limits))
        apps.append(app)
        client = app.test_client()
        if ready:
            wait_ready(client)
        return client

    return build


@pytest.fixture
def model(tmp_path: Path, iris_model_file: Path, apps: list[Flask]) -> Callable[..., FlaskClient]:
    """``model(**spec)``: the sklearn template serving the iris model, ready."""

    def build(limits: dict[str, Any] | None = None, **spec: Any) -> FlaskClient:
        fn = FunctionSpec.from_dict({"name": "iris", "lang": "sklearn", "model": str(iris_model_file), **spec})
        app = create_app(fn, RuntimeConfig(load_failure_exit_after=None, **(limits or {})))
        apps.append(app)
        client = app.test_client()
        wait_ready(client)
        return client

    return build


def assert_error(reply: Any, status: int, code: str | None = None, field: str | None = None) -> dict[str, Any]:
    """The runtime's one error shape: JSON naming what is wrong, never a traceback."""
    assert reply.status_code == status, reply.get_data(as_text=True)
    assert reply.mimetype == "application/json"
    body = reply.get_json()
    assert body["error"] and (code is None or body["code"] == code), body
    assert field is None or body.get("field") == field, body
    assert "Traceback" not in reply.get_data(as_text=True)
    return body


# ---- invoke ---------------------------------------------------------------------------------------------


def test_handle_gets_the_payload_and_its_context(function: Callable[..., FlaskClient]) -> None:
    client = function()
    reply = client.post("/sub/path?x=1", json={"a": 1}, headers={"X-Test": "t"})
    assert reply.status_code == 200
    assert reply.get_json() == {"echo": {"a": 1}, "path": "/sub/path", "method": "POST", "query": {"x": "1"},
                                "header": "t", "loaded": ["echo"]}
    assert client.post("/", data=b"hi there", content_type="text/plain").get_json()["echo"] == "hi there"
    assert client.get("/").get_json()["echo"] is None  # an empty body is None, and any method is taken
    assert client.delete("/things/1").get_json()["method"] == "DELETE"


@pytest.mark.parametrize(("op", "status", "content_type", "body"), [
    ("bytes", 200, "application/octet-stream", b"\x00\x01raw"),
    ("text", 200, "text/plain; charset=utf-8", b"plain text"),
    ("created", 201, "application/json", b'{"created":true}'),
])
def test_what_a_handler_returns_is_sent_as_it_should(function: Callable[..., FlaskClient], op: str, status: int,
                                                     content_type: str, body: bytes) -> None:
    reply = function().post("/", json={"op": op})
    assert (reply.status_code, reply.content_type, reply.get_data()) == (status, content_type, body)


# ---- health and readiness ------------------------------------------------------------------------------------


def test_ready_is_503_until_loaded_then_200(function: Callable[..., FlaskClient]) -> None:
    """The order-independent "503 until loaded": this app is the test's own, gated until it says so."""
    client = function(gated=True, ready=False)
    not_yet = assert_error(client.get("/_/ready"), 503, "unavailable")
    assert not_yet["details"] == {"status": "loading"} and not_yet["function"] == "echo"
    assert client.get("/_/ready").headers["Retry-After"] == "1"
    early = assert_error(client.post("/", json={"a": 1}), 503, "unavailable")
    assert early["function"] == "echo"
    assert client.get("/_/health").get_json() == {"status": "ok", "function": "echo", "state": "loading"}
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/echo/ready").get_json() == {"name": "echo", "ready": False}
    assert client.get("/v2/health/live").get_json() == {"live": True}  # alive while loading
    hooks.event("load").set()
    body = wait_ready(client).get_json()
    assert body["status"] == "ready" and body["function"] == "echo" and body["load_seconds"] >= 0
    assert client.get("/_/health").get_json()["state"] == "ready"
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.post("/", json={"a": 1}).get_json()["echo"] == {"a": 1}


def test_a_failed_load_is_reported_by_ready_and_invoke(function: Callable[..., FlaskClient]) -> None:
    client = function(fail_load=True, ready=False)
    for _ in range(6):
        reply = client.get("/_/ready?wait=10")
        if reply.get_json()["details"]["status"] == "failed":
            break
    body = assert_error(reply, 503, "unavailable")
    assert body["details"] == {"status": "failed"} and "the weights" in body["error"]
    assert_error(client.post("/", json={}), 503, "unavailable")
    assert client.get("/_/health").get_json()["state"] == "failed"


@pytest.mark.parametrize("wait", ["soon", "nan"])
def test_a_bad_ready_wait_is_400_naming_it(function: Callable[..., FlaskClient], wait: str) -> None:
    assert_error(function().get(f"/_/ready?wait={wait}"), 400, field="wait")


# ---- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "content_type", "field", "words"), [
    (b'{"a": 1', "application/json", "$", "invalid JSON"),
    (b"\xff\xfe", "application/json", "$", "UTF-8"),
    (b'{"a": NaN}', "application/json", "$", "NaN"),
    (b"\xff", "text/plain", "$", "UTF-8"),
])
def test_a_malformed_body_is_400_naming_the_field(function: Callable[..., FlaskClient], body: bytes,
                                                  content_type: str, field: str, words: str) -> None:
    client = function()
    error = assert_error(client.post("/", data=body, content_type=content_type), 400, field=field)
    assert words in error["error"]
    assert client.post("/", json={"a": 1}).status_code == 200  # and it keeps serving


@pytest.mark.parametrize("op", ["boom", "nan", "object"])
def test_a_failing_handler_is_500_without_its_traceback_or_secrets(function: Callable[..., FlaskClient],
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   op: str) -> None:
    client = function()
    body = assert_error(client.post("/", json={"op": op}), 500, "handler_error")
    text = json.dumps(body)
    assert "secret" not in text and "42" not in text and "RuntimeError(" not in text
    assert body["function"] == "echo"
    if op == "boom":  # the details go to the function's log, not to the caller
        assert "the secret is 42" in caplog.text
    assert client.post("/", json={"a": 1}).status_code == 200


def test_a_body_over_the_limit_is_413_and_never_reaches_the_handler(function: Callable[..., FlaskClient]) -> None:
    client = function(max_body_bytes=64)
    error = assert_error(client.post("/", json={"op": "boom", "pad": "x" * 200}), 413, "payload_too_large")
    assert "64" in error["error"]
    assert client.post("/", json={"a": 1}).status_code == 200


def test_past_max_inflight_is_429_with_retry_after(function: Callable[..., FlaskClient]) -> None:
    client = function(max_inflight=1)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(client.post, "/", json={"op": "block", "id": "a"})
        assert hooks.event("started-a").wait(30)
        reply = client.post("/", json={"a": 1})
        assert_error(reply, 429, "too_many_requests")
        assert reply.headers["Retry-After"] == "1"
        hooks.event("release-a").set()
        assert busy.result(30).get_json() == {"released": "a"}
    assert client.post("/", json={"a": 1}).status_code == 200  # the slot is free again


def test_a_handler_past_its_timeout_is_504(function: Callable[..., FlaskClient]) -> None:
    client = function(timeout=0.05)
    body = assert_error(client.post("/", json={"op": "block", "id": "slow"}), 504, "timeout")
    assert body["function"] == "echo" and "0.05s" in body["error"]
    hooks.event("release-slow").set()


def test_unknown_routes_and_methods_are_json(model: Callable[..., FlaskClient]) -> None:
    client = model()
    missing = assert_error(client.get("/nope"), 404, "not_found")
    assert "POST /" in missing["error"]
    wrong = assert_error(client.get("/"), 405, "method_not_allowed")
    assert "POST" in client.get("/").headers["Allow"] and wrong["error"]
    other = assert_error(client.post("/v2/models/other/infer", json={"inputs": []}), 404, "not_found")
    assert other["function"] == "other" and "serves 'iris'" in other["error"]


# ---- a model: invoke, signature, V2 -------------------------------------------------------------------------------


def test_a_model_answers_like_its_predict(model: Callable[..., FlaskClient], iris_model_file: Path) -> None:
    client = model()
    want = joblib.load(iris_model_file).predict(np.array(ROWS)).tolist()
    assert client.post("/", json=ROWS).get_json() == want
    assert_error(client.post("/", data=b"[[1, 2, 3, 4]]", content_type="text/plain"), 415,
                 "unsupported_media_type", field="Content-Type")


@pytest.mark.parametrize(("payload", "field", "words"), [
    ([{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}], "[0].petal_width", "missing field"),
    ([{"sepal_length": "long", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}], "[0].sepal_length",
     "must be float64"),
    ([[5.1, 3.5, 1.4]], "[0]", "4 inputs"),
])
def test_a_signature_violation_is_400_naming_the_field(model: Callable[..., FlaskClient], payload: Any,
                                                       field: str, words: str) -> None:
    signature = {"inputs": [{"name": f, "dtype": "float64", "shape": [-1]} for f in FEATURES],
                 "outputs": [{"name": "predict", "dtype": "int64", "shape": [-1]}]}
    client = model(signature=signature)
    error = assert_error(client.post("/", json=payload), 400, field=field)
    assert words in error["error"]
    assert client.post("/", json=ROWS).status_code == 200


def test_v2_metadata_ready_and_infer(model: Callable[..., FlaskClient], iris_model_file: Path) -> None:
    client = model()
    want = joblib.load(iris_model_file).predict(np.array(ROWS)).tolist()
    assert client.get("/v2").get_json()["name"] == "hydro-serving"
    assert client.get("/v2/models/iris/ready").get_json() == {"name": "iris", "ready": True}
    meta = client.get("/v2/models/iris").get_json()
    assert meta["name"] == "iris" and meta["platform"] == "sklearn"
    flat = [v for row in ROWS for v in row]
    reply = client.post("/v2/models/iris/infer", json={"id": "r1", "inputs": [
        {"name": "x", "shape": [4, 4], "datatype": "FP64", "data": flat}]})
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    assert body["id"] == "r1" and body["model_name"] == "iris"
    assert body["outputs"][0]["shape"] == [4] and body["outputs"][0]["data"] == want


@pytest.mark.parametrize(("document", "field"), [
    ({"inputs": []}, "inputs"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}, "inputs[0].datatype"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3]}]}, "inputs[0].data"),
    ({"id": 7, "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, "id"),
])
def test_a_bad_v2_request_is_400_naming_the_field(model: Callable[..., FlaskClient], document: Any,
                                                  field: str) -> None:
    client = model()
    assert_error(client.post("/v2/models/iris/infer", json=document), 400, field=field)


def test_v2_infer_takes_json_only(model: Callable[..., FlaskClient]) -> None:
    reply = model().post("/v2/models/iris/infer", data=b"{}", content_type="text/plain")
    assert_error(reply, 415, field="Content-Type")


# ---- metrics and batching -----------------------------------------------------------------------------------------


def metric(text: str, prefix: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.rsplit(" ", 1)[-1])


def test_metrics_count_requests_by_endpoint_and_status(model: Callable[..., FlaskClient]) -> None:
    client = model()
    client.post("/", json=ROWS)
    client.post("/", data=b"{", content_type="application/json")
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, 'hydro_function_requests_total{code="200",endpoint="/",function="iris"}') == 1
    assert metric(text, 'hydro_function_requests_total{code="400",endpoint="/",function="iris"}') == 1
    assert metric(text, 'hydro_function_ready{function="iris"}') == 1
    assert metric(text, 'hydro_function_model_load_seconds{function="iris"}') > 0
    assert "/metrics" not in "".join(line for line in text.splitlines() if "requests_total{" in line)


def test_concurrent_requests_share_one_batch(model: Callable[..., FlaskClient], iris_model_file: Path) -> None:
    """A batch waits for max_batch_size requests (the delay is far longer than the test), so exactly one forms."""
    client = model(batching={"max_batch_size": 4, "max_batch_delay_ms": 60000}, timeout="60s")
    fitted = joblib.load(iris_model_file)
    barrier = threading.Barrier(4)

    def call(row: list[float]) -> Any:
        barrier.wait(30)
        return client.post("/", json=[row])

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(call, ROWS))
    assert [r.status_code for r in replies] == [200] * 4
    assert [r.get_json() for r in replies] == [[v] for v in fitted.predict(np.array(ROWS)).tolist()]
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, 'hydro_function_batch_size_count{function="iris"}') == 1
    assert metric(text, 'hydro_function_batch_size_sum{function="iris"}') == 4
