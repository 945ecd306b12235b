"""Adaptive batching: the Batcher with the real sklearn and onnx handlers, and through a real server.

The first batch is held on an Event so that later requests are queued before it finishes:
which requests share a batch is then decided by the rules (max size), not by thread timing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from hydro_serving.builder.templates import get_template
from hydro_serving.errors import ValidationError
from hydro_serving.runtime.batching import Batcher
from hydro_serving.runtime.loader import import_entrypoint
from hydro_serving.sdk import LoadContext
from hydro_serving.stack.model import FunctionSpec
from tests.conftest import free_port
from tests.runtime.helpers import base_env, get, post, start_runtime

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]]


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("batch")
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    joblib.dump(model, work / "model.joblib")
    onx = to_onnx(model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}})
    (work / "model.onnx").write_bytes(onx.SerializeToString())
    return {"dir": work, "model": model}


def load_handler(lang: str, model_path: Path, **spec: Any) -> Any:
    fn = FunctionSpec.from_dict({"name": "b", "lang": lang, "model": str(model_path), **spec})
    handler = import_entrypoint(get_template(lang))()
    handler.load(model_path, LoadContext(spec=fn, model_dir=model_path, handler_dir=None))
    return handler


def close(a: Any, b: Any) -> bool:
    """Equal, with float32 noise allowed: a batched matrix product may round differently than one row."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-5, atol=1e-7))
    return a == b


class Held:
    """Wraps predict_batch: the first call waits for ``release``; every call records its batch size."""

    def __init__(self, predict_batch: Any) -> None:
        self.predict_batch = predict_batch
        self.release = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []

    def __call__(self, payloads: list[Any]) -> list[Any]:
        self.sizes.append(len(payloads))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.release.wait(30), "the test never released the first batch"
        return self.predict_batch(payloads)


@pytest.fixture(params=["sklearn", "onnx"])
def handler(request: pytest.FixtureRequest, iris: dict[str, Any]) -> Any:
    name = "model.joblib" if request.param == "sklearn" else "model.onnx"
    return load_handler(request.param, iris["dir"] / name)


def run_held(handler: Any, payloads: list[Any], max_batch_size: int) -> tuple[list[Future[Any]], Held]:
    held = Held(handler.predict_batch)
    batcher = Batcher(held, max_batch_size=max_batch_size, max_batch_delay_ms=0)
    try:
        futures = [batcher.submit(payloads[0])]
        assert held.entered.wait(30)
        futures += [batcher.submit(p) for p in payloads[1:]]
        held.release.set()
        for f in futures:
            f.exception(timeout=30)
    finally:
        batcher.close()
    return futures, held


def test_each_request_gets_its_own_rows_in_order(handler: Any) -> None:
    payloads = [ROWS[i % 4: i % 4 + 1 + i % 3] for i in range(10)]
    futures, held = run_held(handler, payloads, max_batch_size=4)
    assert close([f.result() for f in futures], [handler.predict(p) for p in payloads])
    assert sum(held.sizes) == 10 and max(held.sizes) == 4 and held.sizes[0] == 1


def test_a_bad_request_fails_alone(handler: Any) -> None:
    payloads = [ROWS[:1], [[1.0, 2.0, 3.0]], ROWS[1:3], [[1.0, 2.0, "x", 4.0]], ROWS[3:]]
    futures, _ = run_held(handler, payloads, max_batch_size=8)
    assert close(futures[0].result(), handler.predict(ROWS[:1]))
    assert close(futures[2].result(), handler.predict(ROWS[1:3]))
    assert close(futures[4].result(), handler.predict(ROWS[3:]))
    for i, field in ((1, "[0]"), (3, "[0][2]")):
        error = futures[i].exception()
        assert isinstance(error, ValidationError) and error.field == field


def test_a_request_given_up_on_is_never_computed(handler: Any) -> None:
    held = Held(handler.predict_batch)
    batcher = Batcher(held, max_batch_size=8, max_batch_delay_ms=0)
    try:
        first = batcher.submit(ROWS[:1])
        assert held.entered.wait(30)
        dropped = batcher.submit(ROWS[1:2])
        kept = batcher.submit(ROWS[2:3])
        assert dropped.cancel()  # what the runtime does when a caller's timeout passes
        held.release.set()
        assert close(kept.result(timeout=30), handler.predict(ROWS[2:3]))
        assert close(first.result(timeout=30), handler.predict(ROWS[:1]))
    finally:
        batcher.close()
    assert held.sizes == [1, 1]


def test_merged_call_that_fails_is_retried_per_request(iris: dict[str, Any]) -> None:
    # without a signature the sklearn template lets text through to the model (it might be a text
    # pipeline); the merged call then fails and each request is run alone to blame the right one
    handler = load_handler("sklearn", iris["dir"] / "model.joblib")
    results = handler.predict_batch([ROWS[:2], [[5.0, "x", 1.0, 1.0]], ROWS[2:]])
    assert close(results[0], handler.predict(ROWS[:2])) and close(results[2], handler.predict(ROWS[2:]))
    assert isinstance(results[1], ValidationError) and results[1].field == "[0][1]"


@pytest.fixture(scope="module")
def batched_server(iris: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    work = tmp_path_factory.mktemp("batched")
    spec = {"name": "batched", "lang": "sklearn", "model": str(iris["dir"] / "model.joblib"),
            "batching": {"max_batch_size": 8, "max_batch_delay_ms": 5}}
    port = free_port()
    proc = start_runtime(spec, port, work, base_env(work / "home"))
    try:
        proc.wait_ready()
        yield port
    finally:
        proc.stop()


def test_server_with_batching_answers_every_caller_correctly(batched_server: int, iris: dict[str, Any]) -> None:
    model = iris["model"]
    payloads = [ROWS[i % 4:] for i in range(12)] + [[[1.0, 2.0]]]
    replies: dict[int, Any] = {}

    def call(i: int) -> None:
        replies[i] = post(batched_server, "/", payloads[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(12):
        assert replies[i].status == 200 and replies[i].json == model.predict(np.array(payloads[i])).tolist()
    assert replies[12].status == 400 and replies[12].json["field"] == "[0]"
    metrics = get(batched_server, "/metrics").body.decode()
    count = next(line for line in metrics.splitlines() if line.startswith("hydro_function_batch_size_count"))
    assert 1 <= float(count.split()[-1]) <= 13


def test_a_batching_worker_has_a_thread_per_batch_slot() -> None:
    # gthread holds one request per thread: with the 4 threads of a two-worker replica no batch could
    # grow past 4 (issue 18); with batching on each worker gets at least max_batch_size threads
    from hydro_serving.runtime.server import default_threads

    plain = FunctionSpec.from_dict({"name": "p", "lang": "sklearn", "model": "/m"})
    batched = FunctionSpec.from_dict({"name": "b", "lang": "sklearn", "model": "/m",
                                      "batching": {"max_batch_size": 32, "max_batch_delay_ms": 2}})
    small = FunctionSpec.from_dict({"name": "s", "lang": "sklearn", "model": "/m",
                                    "batching": {"max_batch_size": 2}})
    assert (default_threads(2, plain), default_threads(1, plain)) == (4, 8)
    assert (default_threads(2, batched), default_threads(1, batched)) == (32, 32)
    assert (default_threads(2, small), default_threads(1, small)) == (4, 8)


def test_callers_on_the_fast_path_share_a_batch_and_keep_their_own_rows_and_errors(iris: dict[str, Any]) -> None:
    """12 callers at once through the app's POST / (the fast path): the first batch is held until the other
    11 are queued, so they form one batch of 11, in which a caller with a bad row gets its own 400."""
    from hydro_serving.runtime.app import create_app
    from hydro_serving.runtime.config import RuntimeConfig

    spec = FunctionSpec.from_dict({"name": "b", "lang": "sklearn", "model": str(iris["dir"] / "model.joblib"),
                                   "batching": {"max_batch_size": 16, "max_batch_delay_ms": 0}})
    app = create_app(spec, RuntimeConfig.from_env(spec, env={}))
    runtime = app.extensions["hydro_runtime"]
    assert runtime.loader.wait(60) and runtime.batcher is not None
    held = Held(runtime.batcher._predict_batch)
    runtime.batcher._predict_batch = held
    payloads: list[Any] = [ROWS[i % 4:] for i in range(12)]
    payloads[5] = [[1.0, 2.0, "x", 4.0]]
    payloads[8] = [[1.0, 2.0]]
    replies: dict[int, Any] = {}

    def call(i: int) -> None:
        replies[i] = app.test_client().post("/", json=payloads[i])

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert held.entered.wait(30)
    rest = [threading.Thread(target=call, args=(i,)) for i in range(1, 12)]
    for t in rest:
        t.start()
    queued = threading.Event()
    for _ in range(3000):  # until the 11 are waiting in the batcher's queue (bounded; no timing asserted)
        if runtime.batcher._queue.qsize() == 11:
            queued.set()
            break
        threading.Event().wait(0.01)
    held.release.set()
    for t in [first, *rest]:
        t.join(60)
    assert queued.is_set() and held.sizes == [1, 11]
    for i, payload in enumerate(payloads):
        if i in (5, 8):
            continue
        assert replies[i].status_code == 200, replies[i].json
        assert replies[i].json == iris["model"].predict(np.array(payload)).tolist()
    assert replies[5].status_code == 400 and replies[5].json["field"] == "[0][2]"
    assert replies[8].status_code == 400 and replies[8].json["field"] == "[0]"
    assert runtime.executor.inflight == 0
    runtime.shutdown()
