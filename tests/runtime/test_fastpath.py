"""A model's ``POST /`` fast path (runtime/fastpath.py) answers exactly as the Flask route it bypasses.

Every request is sent twice, in process through werkzeug's test client: once to the app as built (the
fast path in front) and once to the Flask app behind it (``ModelFastPath.flask_wsgi``), and the two
answers must match: status, JSON body and the headers a client reads. A counter on the Flask side proves
which requests the fast path kept for itself. Hostile input (malformed, oversized, hostile model) is
included: the fast path must not be a way around a check.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import joblib
import pytest
from flask import Flask
from werkzeug.test import Client

from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.runtime.fastpath import ModelFastPath
from hydro_serving.stack import function_from_dict
from tests.runtime.helpers import Counting


class Hostile:
    """A "model" whose predict raises with a secret in its message (pickled into the model file)."""

    n_features_in_ = 4

    def predict(self, x: Any) -> Any:
        raise RuntimeError("secret /etc/shadow detail")


def model_app(model_file: Path, **config: Any) -> tuple[Flask, Counting]:
    spec = function_from_dict({"name": "iris", "lang": "sklearn", "model": str(model_file)})
    base = RuntimeConfig.from_env(spec, env={})
    app = create_app(spec, RuntimeConfig(**{**base.__dict__, **config}))
    assert app.extensions["hydro_runtime"].loader.wait(60)
    assert isinstance(app.wsgi_app, ModelFastPath)
    behind = Counting(app.wsgi_app.flask_wsgi)
    app.wsgi_app.flask_wsgi = behind
    return app, behind


def both(app: Flask, behind: Counting, body: bytes, content_type: str | None = "application/json",
         headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    """(fast, reference): the same request through the app and straight to the Flask app behind it."""
    kw: dict[str, Any] = {"data": body, "headers": headers or {}}
    if content_type is not None:
        kw["content_type"] = content_type
    fast = app.test_client().post("/", **kw)
    reference = Client(behind.wsgi).post("/", **kw)
    return fast, reference


def same(fast: Any, reference: Any) -> None:
    assert fast.status_code == reference.status_code, (fast.data, reference.data)
    assert fast.get_json(silent=True) == reference.get_json(silent=True), (fast.data, reference.data)
    assert fast.mimetype == reference.mimetype
    assert int(fast.headers["Content-Length"]) == len(fast.data)
    assert fast.headers.get("Retry-After") == reference.headers.get("Retry-After")


@pytest.fixture(scope="module")
def iris(iris_model_file: Path) -> tuple[Flask, Counting]:
    return model_app(iris_model_file)


def test_good_rows_are_answered_by_the_fast_path_as_flask_would(iris: tuple[Flask, Counting]) -> None:
    app, behind = iris
    before = behind.calls
    fast, reference = both(app, behind, b"[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]")
    same(fast, reference)
    assert fast.status_code == 200 and fast.get_json() == [0, 2]
    assert behind.calls == before  # the fast path answered it (the reference goes round the counter)
    fast, reference = both(app, behind, b'{"columns":[[5.1,3.5,1.4,0.2]]}', "application/vnd.x+json; charset=utf-8")
    same(fast, reference)


@pytest.mark.parametrize("body", [
    b"", b"   ", b"{not json", b"[[5.1,3.5,1.4,0.2]", b"[[NaN,1,2,3]]", b"\xff\xfe[1]", b"[" * 5000 + b"]" * 5000,
    b'[["a","b","c","d"]]', b"[[1,2,3]]", b"[]", b'"just a string"', b"[[1,2,3,4]]" * 2,
])
def test_malformed_bodies_are_the_same_4xx_json_naming_the_field(iris: tuple[Flask, Counting], body: bytes) -> None:
    app, behind = iris
    fast, reference = both(app, behind, body)
    same(fast, reference)
    assert 400 <= fast.status_code < 500 and fast.get_json()["field"]
    assert "Traceback" not in fast.get_data(as_text=True)


def test_an_oversized_body_is_413_before_it_is_read(iris_model_file: Path) -> None:
    app, behind = model_app(iris_model_file, max_body_bytes=64)
    fast, reference = both(app, behind, b"[" + b"[5.1,3.5,1.4,0.2]," * 10 + b"[1,2,3,4]]")
    same(fast, reference)
    assert fast.status_code == 413 and "HYDRO_MAX_BODY_BYTES" in fast.get_json()["error"]


def test_what_the_fast_path_does_not_take_goes_to_flask(iris: tuple[Flask, Counting]) -> None:
    app, behind = iris
    client = app.test_client()
    before = behind.calls
    media = client.post("/", data=b"[[1,2,3,4]]", content_type="text/plain")
    assert media.status_code == 415 and media.get_json()["field"] == "Content-Type"
    assert client.get("/").status_code == 405
    assert client.post("/sub", json=[[1, 2, 3, 4]]).status_code == 404
    bad_length = client.post("/", data=b"[[1,2,3,4]]", content_type="application/json",
                             environ_overrides={"CONTENT_LENGTH": "many"})  # werkzeug's reading is the reference
    assert bad_length.status_code < 500 and bad_length.is_json
    chunked = client.post("/", input_stream=io.BytesIO(b"[[5.1,3.5,1.4,0.2]]"),
                          content_type="application/json", headers={"Transfer-Encoding": "chunked"},
                          environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True})
    assert chunked.status_code == 200 and chunked.get_json() == [0]
    assert behind.calls == before + 5


def test_a_model_still_loading_is_503_through_flask(tmp_path: Path) -> None:
    spec = function_from_dict({"name": "iris", "lang": "sklearn", "model": str(tmp_path / "none.joblib")})
    app = create_app(spec, RuntimeConfig.from_env(spec, env={}), start_loading=False)
    reply = app.test_client().post("/", json=[[1, 2, 3, 4]])
    assert reply.status_code == 503 and reply.get_json()["details"]["status"] == "loading"


def test_a_hostile_model_is_a_bare_500_and_the_replica_keeps_serving(tmp_path: Path, iris_model_file: Path) -> None:
    path = tmp_path / "hostile.joblib"
    joblib.dump(Hostile(), path)
    app, behind = model_app(path)
    fast, reference = both(app, behind, b"[[1,2,3,4]]")
    same(fast, reference)
    assert fast.status_code == 500 and "secret" not in fast.get_data(as_text=True)
    assert app.extensions["hydro_runtime"].executor.inflight == 0  # the slot was released


def test_the_fast_path_counts_requests_and_latency_in_metrics(iris_model_file: Path) -> None:
    app, _behind = model_app(iris_model_file)
    client = app.test_client()
    for _ in range(3):
        assert client.post("/", json=[[5.1, 3.5, 1.4, 0.2]]).status_code == 200
    assert client.post("/", data=b"{", content_type="application/json").status_code == 400
    text = client.get("/metrics").get_data(as_text=True)
    assert 'hydro_function_requests_total{code="200",endpoint="/",function="iris"} 3.0' in text
    assert 'hydro_function_requests_total{code="400",endpoint="/",function="iris"} 1.0' in text
    assert 'hydro_function_request_duration_seconds_count{endpoint="/",function="iris"} 4.0' in text


def test_a_full_replica_answers_429_on_the_fast_path(iris_model_file: Path) -> None:
    app, behind = model_app(iris_model_file, max_inflight=1)
    executor = app.extensions["hydro_runtime"].executor
    executor._acquire()  # one request in flight (held by the test, not by a timer)
    try:
        fast, reference = both(app, behind, b"[[5.1,3.5,1.4,0.2]]")
    finally:
        executor._release()
    same(fast, reference)
    assert fast.status_code == 429 and fast.headers["Retry-After"] == "1"
