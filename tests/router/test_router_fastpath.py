"""A router's ``POST /`` fast path (runtime/fastpath.py ``RouterFastPath``) answers exactly as the Flask route.

The router replica is built in process by the real runtime (``create_app`` with the router template)
and calls a real HTTP server on 127.0.0.1 playing the gateway (conftest's ``fake_gateway``). Every
request is sent twice: through the app as built (the fast path in front) and straight to the Flask
app behind it; status, body, the headers a client reads (``X-Hydro-Stage-Timings`` without its
``ms`` figures and the stand-in's first-call ``cold_start``, the trace id of ``traceparent``,
``Retry-After``) and what the stages received must match. A counter on the Flask side proves which
requests the fast path kept.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.runtime.fastpath import RouterFastPath
from hydro_serving.stack import function_from_dict
from tests.runtime.helpers import Counting

SIGNATURE = {"inputs": [{"name": "x", "dtype": "float64", "shape": [-1]}]}
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def router_app(monkeypatch: pytest.MonkeyPatch, gateway_url: str, chain: list[Any],
               options: dict[str, Any] | None = None, **config: Any) -> tuple[Flask, Counting]:
    monkeypatch.setenv("HYDRO_GATEWAY_URL", gateway_url)
    spec = function_from_dict({"name": "pipe", "lang": "router", "chain": chain,
                               "options": {"breaker_failures": 100, **(options or {})}})
    base = RuntimeConfig.from_env(spec, env={})
    app = create_app(spec, RuntimeConfig(**{**base.__dict__, **config}))
    runtime = app.extensions["hydro_runtime"]
    assert runtime.loader.wait(30), runtime.loader.error
    assert isinstance(app.wsgi_app, RouterFastPath)
    behind = Counting(app.wsgi_app.flask_wsgi)
    app.wsgi_app.flask_wsgi = behind
    return app, behind


def both(app: Flask, behind: Counting, body: bytes, content_type: str = "application/json",
         headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    kw: dict[str, Any] = {"data": body, "headers": {"traceparent": TRACE, **(headers or {})},
                          "content_type": content_type}  # the caller's trace: both answers carry its id
    before = behind.calls
    fast = app.test_client().post("/", **kw)
    assert behind.calls == before, "the fast path handed the request to Flask"
    reference = Client(behind.wsgi).post("/", **kw)
    return fast, reference


def timings(response: Any) -> list[dict[str, Any]]:
    raw = response.headers.get("X-Hydro-Stage-Timings")
    if not raw:
        return []
    return [{k: v for k, v in entry.items() if k not in ("ms", "cold_start")} for entry in json.loads(raw)]


def same(fast: Any, reference: Any) -> None:
    assert fast.status_code == reference.status_code, (fast.data, reference.data)
    assert fast.data == reference.data
    assert fast.headers.get("Content-Type") == reference.headers.get("Content-Type")
    assert int(fast.headers["Content-Length"]) == len(fast.data)
    assert sorted(k.lower() for k, _ in fast.headers.items()) == sorted(k.lower() for k, _ in reference.headers.items())
    assert timings(fast) == timings(reference)
    assert fast.headers.get("Retry-After") == reference.headers.get("Retry-After")
    trace_fast, trace_ref = fast.headers.get("traceparent"), reference.headers.get("traceparent")
    assert (trace_fast is None) == (trace_ref is None)
    if trace_fast:
        assert trace_fast.split("-")[1] == trace_ref.split("-")[1]


def stage_headers(call: Any) -> dict[str, str]:
    """What a stage received, minus what is per call (its own span id, the time left)."""
    return {k: v for k, v in call.headers.items() if k not in ("traceparent", "x-timeout")}


def test_a_pipeline_answers_the_same_and_its_stages_see_the_same_request(
        fake_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    fake_gateway.behaviours["b"] = fake_gateway.appender("b")
    app, behind = router_app(monkeypatch, fake_gateway.url, ["a", "b"], {"prewarm": False})  # first call only
    headers = {"X-Request-Id": "req-1", "traceparent": TRACE, "X-Hydro-Key": "user-7", "Accept": "application/json"}
    fast, reference = both(app, behind, b'{"trail": []}', headers=headers)
    same(fast, reference)
    assert fast.status_code == 200 and json.loads(fast.data)["trail"] == ["a", "b"]
    assert fast.headers["traceparent"].split("-")[1] == TRACE.split("-")[1]
    calls = [c for c in fake_gateway.calls if not c.prewarm]
    assert len(calls) == 4
    assert [stage_headers(c) for c in calls[:2]] == [stage_headers(c) for c in calls[2:]]
    assert calls[0].headers["x-request-id"] == "req-1" and calls[0].headers["x-hydro-key"] == "user-7"
    assert calls[0].headers["traceparent"].split("-")[1] == TRACE.split("-")[1]


def test_a_stage_failure_is_the_same_502_naming_the_stage(fake_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gateway.behaviours["a"] = lambda call: fake_gateway.Reply(500, b'{"error": "boom /etc/secret"}')
    app, behind = router_app(monkeypatch, fake_gateway.url, ["a"])
    fast, reference = both(app, behind, b"{}")
    same(fast, reference)
    body = json.loads(fast.data)
    assert fast.status_code == 502 and body["stage"] == "a" and body["details"]["stage_index"] == 1
    assert "Traceback" not in fast.get_data(as_text=True)


def test_a_stage_refusing_its_input_keeps_its_4xx(fake_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gateway.behaviours["a"] = lambda call: fake_gateway.Reply(
        422, b'{"error": "bad rows", "field": "rows"}', {"Content-Type": "application/json", "Retry-After": "3"})
    app, behind = router_app(monkeypatch, fake_gateway.url, ["a"])
    fast, reference = both(app, behind, b"[1]")
    same(fast, reference)
    assert fast.status_code == 422 and json.loads(fast.data)["field"] == "rows"
    assert fast.headers["Retry-After"] == "3"


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b'{"x": "nan"}', b"   "])
def test_malformed_or_invalid_input_is_the_same_400_naming_the_field(
        fake_gateway: Any, monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    app, behind = router_app(monkeypatch, fake_gateway.url, ["a"], {"stage_signatures": {"a": SIGNATURE}})
    fast, reference = both(app, behind, body)
    same(fast, reference)
    assert fast.status_code == 400 and json.loads(fast.data)["field"]
    assert not [c for c in fake_gateway.calls if not c.prewarm]  # no stage ran on bad input


def test_a_slow_stage_is_the_same_504_within_the_callers_deadline(
        fake_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.slow(5, fake_gateway.appender("a"))
    app, behind = router_app(monkeypatch, fake_gateway.url, ["a"])
    fast, reference = both(app, behind, b"{}", headers={"X-Timeout": "0.3"})
    same(fast, reference)
    assert fast.status_code == 504 and json.loads(fast.data)["details"]["cause"] == "timeout"
    assert app.extensions["hydro_runtime"].executor.inflight == 0


def test_an_oversized_body_is_the_same_413_and_no_stage_runs(
        fake_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    app, behind = router_app(monkeypatch, fake_gateway.url, ["a"], max_body_bytes=64)
    fast, reference = both(app, behind, b'{"pad": "' + b"x" * 200 + b'"}')
    same(fast, reference)
    assert fast.status_code == 413 and "HYDRO_MAX_BODY_BYTES" in json.loads(fast.data)["error"]
    assert not [c for c in fake_gateway.calls if not c.prewarm]


def test_a_full_router_is_the_same_429(fake_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    app, behind = router_app(monkeypatch, fake_gateway.url, ["a"], max_inflight=1)
    executor = app.extensions["hydro_runtime"].executor
    executor._acquire()  # one request in flight, held by the test
    try:
        fast, reference = both(app, behind, b"{}")
    finally:
        executor._release()
    same(fast, reference)
    assert fast.status_code == 429 and fast.headers["Retry-After"] == "1"


def test_what_the_router_fast_path_does_not_take_goes_to_flask(
        fake_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gateway.behaviours["a"] = fake_gateway.appender("a")
    app, behind = router_app(monkeypatch, fake_gateway.url, ["a"])
    client = app.test_client()
    before = behind.calls
    assert client.post("/sub/path", json={"k": 1}).status_code == 200  # a sub-path: the handler sees it
    assert client.post("/?v=1", json={"k": 1}).status_code == 200  # a query string
    assert client.post("/", data=b'{"k": 1}', content_type="text/plain").status_code == 200  # raw text body
    assert client.get("/_/health").status_code == 200
    assert behind.calls == before + 4
    assert client.post("/", json={"k": 1}).status_code == 200 and behind.calls == before + 4  # the fast path
    text = client.get("/metrics").get_data(as_text=True)
    assert 'hydro_function_requests_total{code="200",endpoint="/",function="pipe"} 3.0' in text
    # both paths ran the router inline, in the request's thread: the executor never built its pool
    assert app.extensions["hydro_runtime"].executor._pool is None
