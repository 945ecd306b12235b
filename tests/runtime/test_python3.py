"""The python3 template and the runtime's limits, with a real user function in a real server process.

The user's handler.py waits at import for a gate file (so "still loading" is observable without
timing) and blocks on demand until the test releases it (so in-flight and timeout limits are hit
deterministically).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.runtime.helpers import base_env, get, post, request, start_hydro_run, start_runtime, wait_for

HANDLER = '''\
import os
import time

from hydro_serving.sdk import RawResponse

import helpers  # a module beside handler.py: the handler folder is on sys.path

GATE = os.environ["TEST_GATE"]
_deadline = time.monotonic() + 120
while not os.path.exists(GATE) and time.monotonic() < _deadline:
    time.sleep(0.05)

LOADED = []


def load(context):
    LOADED.append(context.spec.name)


def handle(payload, context):
    if isinstance(payload, dict):
        op = payload.get("op")
        if op == "block":  # mark that we started, then wait for the test's release file (bounded)
            open(os.path.join(os.environ["TEST_DIR"], "started-" + payload["id"]), "w").close()
            release = os.path.join(os.environ["TEST_DIR"], "release-" + payload["id"])
            deadline = time.monotonic() + 30
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.02)
            return {"released": payload["id"]}
        if op == "boom":
            raise RuntimeError("the secret is 42")
        if op == "bytes":
            return b"\\x00\\x01raw"
        if op == "text":
            return "plain text"
        if op == "raw":
            return RawResponse(b'{"pre": "encoded"}', status=202, headers={"X-Raw": "yes"})
        if op == "status":
            context.status = 201
            context.response_headers["X-Created"] = "1"
            return {"created": True}
        if op == "nan":
            return {"value": float("nan")}
        if op == "object":
            return {"value": object()}
    return {"echo": payload, "path": context.path, "method": context.method, "loaded": LOADED,
            "shout": helpers.shout(str(payload)), "query": dict(context.query),
            "header": context.headers.get("X-Test")}
'''


def make_function(root: Path) -> Path:
    folder = root / "echo"
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(HANDLER)
    (folder / "helpers.py").write_text("def shout(text):\n    return text.upper()\n")
    (folder / "requirements.txt").write_text("")
    return folder


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`hydro run echo` from a stack.yml, with the handler's import held until the gate opens.

    What the server answers while the gate is still closed is recorded here, before any test can
    open it (``while_loading``), so the "503 until loaded" test does not depend on running first.
    """
    work = tmp_path_factory.mktemp("py3")
    make_function(work)
    (work / "stack.yml").write_text(
        "version: 1.0\nprovider: {name: hydro}\nfunctions:\n  echo:\n    lang: python3\n    handler: ./echo\n"
        "    environment:\n      GREETING: hello\n")
    gate = work / "gate"
    port = free_port()
    env = base_env(work / "home", {"TEST_GATE": str(gate), "TEST_DIR": str(work)})
    proc = start_hydro_run("echo", work / "stack.yml", port, env)
    try:
        proc.wait_up()
        while_loading = {"ready": get(port, "/_/ready"), "invoke": post(port, "/", {"a": 1})}
        yield {"proc": proc, "port": port, "gate": gate, "while_loading": while_loading}
    finally:
        gate.touch()
        proc.stop()


@pytest.fixture(scope="module")
def ready(echo: dict) -> dict:
    """The gate opened (once, by whichever test asks first); ``seen``: the /_/ready statuses until 200."""
    if "seen" not in echo:
        echo["gate"].touch()
        echo["seen"] = echo["proc"].wait_ready()
    return echo


def test_ready_is_503_until_the_handler_module_has_loaded(ready: dict) -> None:
    loading = ready["while_loading"]
    assert loading["ready"].status == 503 and loading["ready"].json["details"] == {"status": "loading"}
    assert loading["invoke"].status == 503 and loading["invoke"].json["function"] == "echo"
    seen = ready["seen"]
    assert seen[-1] == 200 and set(seen[:-1]) <= {503}
    assert get(ready["port"], "/_/ready").status == 200


def test_handle_gets_payload_and_context_and_load_hook_ran(ready: dict) -> None:
    reply = request(ready["port"], "POST", "/sub/path?x=1", json_body={"a": 1}, headers={"X-Test": "t"})
    assert reply.status == 200, reply.body
    assert reply.json == {"echo": {"a": 1}, "path": "/sub/path", "method": "POST", "loaded": ["echo"],
                          "shout": "{'A': 1}", "query": {"x": "1"}, "header": "t"}
    text = request(ready["port"], "POST", "/", b"hi there", content_type="text/plain").json
    assert text["echo"] == "hi there"  # functions take non-JSON bodies, like OpenFaaS python3-http
    assert request(ready["port"], "GET", "/").json["echo"] is None


@pytest.mark.parametrize(("op", "status", "content_type", "body"), [
    ("bytes", 200, "application/octet-stream", b"\x00\x01raw"),
    ("text", 200, "text/plain; charset=utf-8", b"plain text"),
    ("raw", 202, "application/json", b'{"pre": "encoded"}'),
    ("status", 201, "application/json", b'{"created":true}'),
])
def test_every_return_type_is_sent_as_it_should(ready: dict, op: str, status: int, content_type: str,
                                                body: bytes) -> None:
    reply = post(ready["port"], "/", {"op": op})
    assert (reply.status, reply.headers["content-type"], reply.body) == (status, content_type, body)
    if op == "raw":
        assert reply.headers["x-raw"] == "yes"
    if op == "status":
        assert reply.headers["x-created"] == "1"


@pytest.mark.parametrize(("op", "words"), [
    ("boom", "failed (RuntimeError)"),
    ("nan", "NaN"),
    ("object", "not JSON"),
])
def test_handler_failures_are_500_json_without_internals(ready: dict, op: str, words: str) -> None:
    reply = post(ready["port"], "/", {"op": op})
    assert reply.status == 500 and reply.json["code"] == "handler_error" and reply.json["function"] == "echo"
    assert words in reply.json["error"]
    assert "Traceback" not in reply.body.decode() and "secret is 42" not in reply.body.decode()
    assert post(ready["port"], "/", {"a": 1}).status == 200
    if op == "boom":
        wait_for(lambda: "the secret is 42" in ready["proc"].output(), 10, "the traceback in the log")
        assert "Traceback (most recent call last)" in ready["proc"].output()


def test_invalid_json_is_400_and_v2_reaches_the_function(ready: dict) -> None:
    bad = request(ready["port"], "POST", "/", b'{"a": }')
    assert bad.status == 400 and "invalid JSON" in bad.json["error"] and "line 1 column 7" in bad.json["error"]
    v2 = post(ready["port"], "/v2/models/echo/infer", {"id": "x", "inputs": [
        {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]}]})
    assert v2.status == 200 and v2.json["id"] == "x"
    names = {t["name"] for t in v2.json["outputs"]}
    assert {"echo", "path"} <= names


# ---- limits: in-flight cap (429), timeout (504), body size (413) ---------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("py3-limits")
    folder = make_function(work)
    (work / "gate").touch()
    spec = {"name": "limited", "lang": "python3", "handler": str(folder), "timeout": 2}
    env = base_env(work / "home", {"TEST_GATE": str(work / "gate"), "TEST_DIR": str(work),
                                   "HYDRO_MAX_INFLIGHT": "2", "HYDRO_MAX_BODY_BYTES": "1024"})
    port = free_port()
    proc = start_runtime(spec, port, work, env)
    try:
        proc.wait_ready()
        yield {"port": port, "dir": work}
    finally:
        for i in range(10):
            (work / f"release-{i}").touch()
        proc.stop()


def _inflight(port: int) -> float:
    lines = get(port, "/metrics").body.decode().splitlines()
    return float(next(line for line in lines if line.startswith("hydro_function_inflight_requests{")).split()[-1])


def test_too_many_in_flight_is_429_with_retry_after(limited: dict) -> None:
    port, work = limited["port"], limited["dir"]
    results: dict[str, int] = {}
    # a call the 504 test left running keeps its slot until its handler returns (by design): start from none
    wait_for(lambda: _inflight(port) == 0, 10, "no call in flight")

    def call(ident: str) -> None:
        results[ident] = post(port, "/", {"op": "block", "id": ident}).status

    threads = [threading.Thread(target=call, args=(str(i),)) for i in (1, 2)]
    for t in threads:
        t.start()
    wait_for(lambda: (work / "started-1").exists() and (work / "started-2").exists(), 30, "two blocked calls")
    reply = post(port, "/", {"a": 1})
    assert reply.status == 429 and reply.json["code"] == "too_many_requests"
    assert reply.headers["retry-after"] == "1" and "HYDRO_MAX_INFLIGHT" in reply.json["error"]
    for i in (1, 2):
        (work / f"release-{i}").touch()
    for t in threads:
        t.join(30)
    assert results == {"1": 200, "2": 200}
    wait_for(lambda: post(port, "/", {"a": 1}).status == 200, 10, "a free slot")


def test_slow_handler_is_504_and_the_server_keeps_serving(limited: dict) -> None:
    port, work = limited["port"], limited["dir"]
    reply = post(port, "/", {"op": "block", "id": "3"})
    assert reply.status == 504 and reply.json["code"] == "timeout" and "2s" in reply.json["error"]
    (work / "release-3").touch()
    wait_for(lambda: post(port, "/", {"a": 1}).status == 200, 10, "the server to answer again")


def test_body_over_the_limit_is_413(limited: dict) -> None:
    reply = request(limited["port"], "POST", "/", b'{"pad": "' + b"x" * 5000 + b'"}')
    assert reply.status == 413 and reply.json["code"] == "payload_too_large"
    assert post(limited["port"], "/", {"a": 1}).status == 200


# ---- startup errors and load failures -------------------------------------------------------------


def test_bad_spec_or_unknown_template_exits_2_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = base_env(tmp_path / "home")
    missing = subprocess.run([sys.executable, "-m", "hydro_serving.runtime", "--spec", str(tmp_path / "no.json")],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "bad.json").write_text('{"name": "x", "lang": "cobol"}')
    unknown = subprocess.run([sys.executable, "-m", "hydro_serving.runtime", "--spec", str(tmp_path / "bad.json")],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
    assert unknown.returncode == 2 and "unknown template 'cobol'" in unknown.stderr and "sklearn" in unknown.stderr


def test_failed_load_reports_the_cause_then_exits_3(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"this is not a pickle")
    spec = {"name": "broken", "lang": "sklearn", "model": str(tmp_path / "model.joblib")}
    proc = start_runtime(spec, free_port(), tmp_path, base_env(tmp_path / "home", {"HYDRO_LOAD_FAILURE_EXIT": "5s"}))
    try:
        proc.wait_up()
        wait_for(lambda: "failed" in get(proc.port, "/_/ready").body.decode(), 60, "the failed load")
        reply = get(proc.port, "/_/ready")
        assert reply.status == 503 and "failed to load" in reply.json["error"]
        assert reply.json["details"]["status"] == "failed" and reply.json["function"] == "broken"
        assert post(proc.port, "/", [[1, 2, 3, 4]]).status == 503
        assert proc.proc.wait(timeout=60) == 3
        assert "Traceback (most recent call last)" in proc.output()
    finally:
        proc.stop()


def test_hydro_run_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    import signal

    make_function(tmp_path)
    (tmp_path / "gate").touch()
    (tmp_path / "stack.yml").write_text(
        "version: 1.0\nprovider: {name: hydro}\nfunctions:\n  echo:\n    lang: python3\n    handler: ./echo\n")
    env = base_env(tmp_path / "home", {"TEST_GATE": str(tmp_path / "gate"), "TEST_DIR": str(tmp_path)})
    proc = start_hydro_run("echo", tmp_path / "stack.yml", free_port(), env)
    try:
        proc.wait_ready()
        assert f"http://127.0.0.1:{proc.port}/" in proc.output()  # the URL is printed
        proc.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        assert proc.proc.wait(timeout=30) == 0
        assert "Shutting down" in proc.output()
    finally:
        proc.stop()
