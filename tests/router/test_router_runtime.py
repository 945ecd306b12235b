"""The router template served by the real runtime process, calling a real HTTP gateway stand-in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.stack import FunctionSpec

SIGNATURE = {"inputs": [{"name": "Title1", "dtype": "string", "shape": [-1]},
                        {"name": "Title2", "dtype": "string", "shape": [-1]}]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


@pytest.fixture
def router_replica(tmp_path: Path, fake_gateway) -> Iterator[str]:
    """``python -m hydro_serving.runtime`` serving a router spec; yields its base URL."""
    spec = FunctionSpec.from_dict({
        "name": "pipe", "lang": "router",
        "chain": ["feat", {"variants": {"v1": 90, "v2": 10}, "shadow": ["cand"]}, "post"],
        "options": {"stage_signatures": {"feat": SIGNATURE}, "breaker_failures": 2, "breaker_cooldown": "60s"},
    })
    spec_file = tmp_path / "pipe.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    port = _free_port()
    env = {**os.environ, "HYDRO_GATEWAY_URL": fake_gateway.url}
    log = (tmp_path / "router.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hydro_serving.runtime", "--spec", str(spec_file),
                             "--port", str(port), "--threads", "4"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/_/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("router replica did not become ready:\n"
                                     + (tmp_path / "router.log").read_text()[-3000:])
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def record(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def test_router_replica_runs_the_chain(router_replica: str, fake_gateway) -> None:
    for name in ("feat", "v1", "v2", "post"):
        fake_gateway.behaviours[name] = fake_gateway.appender(name)
    fake_gateway.behaviours["cand"] = lambda call: fake_gateway.Reply(500, b'{"error": "candidate broke"}')
    status, body, headers = post(router_replica + "/", record([{"Title1": "a", "Title2": "b"}]),
                                 {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert status == 200, body
    trail = json.loads(body)["trail"]
    assert trail[0] == "feat" and trail[1] in ("v1", "v2") and trail[2] == "post"
    timings = json.loads(headers["x-hydro-stage-timings"])
    assert [t["variant"] for t in timings] == trail
    assert headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    stage_call = fake_gateway.invoked("post")[0]
    assert stage_call.headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert stage_call.headers["x-hydro-pipeline"] == "pipe" and stage_call.headers["x-hydro-stage"] == "3"


def test_router_replica_errors_are_json_naming_the_stage(router_replica: str, fake_gateway) -> None:
    fake_gateway.behaviours["feat"] = fake_gateway.appender("feat")
    # missing field: 400 before any call
    status, body, _ = post(router_replica + "/", record([{"Title1": "a"}]))
    assert status == 400
    error = json.loads(body)
    assert error["field"] == "[0].Title2" and error["function"] == "pipe"
    assert fake_gateway.calls == []
    # a stage refusing its input keeps its 400
    fake_gateway.behaviours["v1"] = fake_gateway.behaviours["v2"] = lambda call: fake_gateway.Reply(
        400, b'{"error": "features has 3 columns, expected 4", "field": "features"}')
    status, body, headers = post(router_replica + "/", record({"Title1": ["a"], "Title2": ["b"]}))
    assert status == 400
    error = json.loads(body)
    assert error["stage"] in ("v1", "v2") and error["field"] == "features"
    assert "x-hydro-stage-timings" in headers
    # a dropped connection: 502 naming the stage, twice, then the breaker answers 503 at once
    fake_gateway.behaviours["v1"] = fake_gateway.behaviours["v2"] = lambda call: fake_gateway.DROP
    key = {"X-Hydro-Key": "same-user"}  # sticky: the same variant (and so the same breaker) each time
    for _ in range(2):
        status, body, _ = post(router_replica + "/", record({"Title1": ["a"], "Title2": ["b"]}), key)
        assert status == 502
        failed = json.loads(body)["stage"]
        assert failed in ("v1", "v2")

    def pipeline_calls() -> int:  # shadow copies arrive in the background: not part of the pipeline's path
        return sum(1 for c in fake_gateway.calls if "x-hydro-shadow" not in c.headers)

    before = pipeline_calls()
    status, body, headers = post(router_replica + "/", record({"Title1": ["a"], "Title2": ["b"]}), key)
    assert status == 503
    assert json.loads(body)["stage"] == failed and "retry-after" in headers
    assert pipeline_calls() == before
