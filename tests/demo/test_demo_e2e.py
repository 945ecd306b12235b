"""End to end: ``hydro demo`` as a real process, then the original request through the real gateway,
router, python3, sklearn and onnx replicas (all real processes on 127.0.0.1).

The models are uploaded first from the session's training (the store step with training is covered
by test_provision), so this test pays for cold starts, not for training twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.demo.provision import ensure_models
from hydro_serving.demo.training import TrainResult
from hydro_serving.replica.process import pid_alive
from hydro_serving.stack import load_stack
from hydro_serving.store import open_store

REPO = Path(__file__).resolve().parents[2]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _NO_PROXY.open(req, timeout=120) as resp:
            return resp.status, dict(resp.headers.items()), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), json.loads(exc.read())


def _replica_pids(url: str, state: Path) -> set[int]:
    try:
        token = json.loads((state / "credentials.json").read_text())["token"]
        req = urllib.request.Request(url + "/system/functions", headers={"Authorization": f"Bearer {token}"})
        with _NO_PROXY.open(req, timeout=5) as resp:
            functions = json.loads(resp.read())
    except (OSError, ValueError, KeyError):
        return set()
    return {i["pid"] for f in functions for i in f["status"]["instances"] if i.get("pid")}


@pytest.fixture
def demo_gateway() -> Iterator[tuple[str, Path]]:
    """The URL the demo will start its gateway on; afterwards the gateway and its replicas are stopped."""
    url = f"http://127.0.0.1:{_free_port()}"
    state = Path(os.environ["HYDRO_STATE"])
    replicas: set[int] = set()
    try:
        yield url, state
    finally:
        replicas |= _replica_pids(url, state)
        pid_file = state / "gateway.pid"
        if pid_file.is_file():
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)  # the gateway stops its replicas on SIGTERM
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in replicas) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in replicas:  # backstop: never leave a replica behind
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def test_demo_deploys_and_answers_the_original_request(trained: TrainResult, seed_body: bytes,
                                                        demo_gateway: tuple[str, Path]) -> None:
    url, state = demo_gateway
    report = ensure_models(open_store(), load_stack(REPO / "stack.yml", env={}), train=lambda _out: trained)
    assert len(report.uploaded) == 2

    run = subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", "demo", "--gateway", url],
                         capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "using pm-classifier:1, pm-classifier-gb:1 from the store" in out
    assert f"started at {url}" in out
    assert (state / "gateway.pid").is_file()  # where the printed 'kill $(cat ...)' points
    assert "product-matching (created)" in out
    assert '"match": false' in out and '"match": true' in out
    assert f"curl -s {url}/function/product-matching" in out
    assert "product-matching-request.json" in out

    # the README's curl: no match, then match
    status, headers, answer = _post(f"{url}/function/product-matching", seed_body)
    assert status == 200, answer
    assert [a["match"] for a in answer] == [False, True]
    assert answer[0]["probability"] < 0.5 < answer[1]["probability"]
    assert all(set(a) == {"match", "probability"} and 0.0 <= a["probability"] <= 1.0 for a in answer)
    timings = headers.get("X-Hydro-Stage-Timings", "")
    assert "pm-features" in timings and "pm-classifier" in timings

    # the 10% variant (ONNX), called directly with the features stage's answer, agrees
    status, _, features = _post(f"{url}/function/pm-features", seed_body)
    assert status == 200 and len(features) == 2
    status, _, boosted = _post(f"{url}/function/pm-classifier-gb", json.dumps(features).encode())
    assert status == 200, boosted
    assert [a["match"] for a in boosted] == [False, True]
    status, _, forest = _post(f"{url}/function/pm-classifier", json.dumps(features).encode())
    assert status == 200 and [a["match"] for a in forest] == [False, True]

    # a pair missing a field is refused with a 400 that names it, before any stage runs
    pairs = json.loads(seed_body)
    del pairs[1]["ItemSpecifics2"]
    status, _, error = _post(f"{url}/function/product-matching", json.dumps(pairs).encode())
    assert status == 400, error
    assert error["field"] == "[1].ItemSpecifics2"
    assert "ItemSpecifics2" in error["error"]

    # a second run finds everything in place
    again = subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", "demo", "--gateway", url],
                           capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{url} is up" in again.stdout and "product-matching (unchanged)" in again.stdout
