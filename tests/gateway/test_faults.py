"""Faults injected into a real gateway (issue 12, point 7): what breaks, how it is reported, what survives.

* a replica SIGKILLed mid-request: that request is a 502 naming the function and its request id; the next
  request is served by a fresh replica;
* the gateway SIGKILLed under load and restarted on the same state: no replica outlives it (they die with
  their parent), every function is back and serves;
* the state directory's disk full (a 2 MiB tmpfs mounted by the test, as root): a deploy is a clear 507
  naming the state directory, functions already deployed keep serving, and once space is freed the
  database is intact and the gateway deploys again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.gateway_fixtures import Gateway, pid_alive


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by walking /proc parent links)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier and p not in found}
        found |= children
        frontier = children
    return found


def test_replica_sigkilled_mid_request_is_502_naming_the_function_then_served(gateway: Any,
                                                                              echo_dir: Path) -> None:
    gateway.deploy(gateway.python_spec("echo", echo_dir))
    assert gateway.invoke("echo", {})[0] == 200
    [pid] = gateway.replica_pids("echo")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(gateway.invoke, "echo", {"sleep": 30}, headers={"X-Request-Id": "victim-1"})
        time.sleep(0.5)
        os.killpg(pid, signal.SIGKILL)
        status, _, body = future.result(timeout=60)
    assert status == 502 and body["function"] == "echo" and body["request_id"] == "victim-1", body
    status, _, body = gateway.invoke("echo", {"after": True})
    assert status == 200 and body["echo"] == {"after": True}
    assert "Traceback" not in gateway.log()


def test_gateway_sigkilled_under_load_leaves_no_replica_and_comes_back(gateway: Any, echo_dir: Path) -> None:
    for name in ("a", "b"):
        gateway.deploy(gateway.python_spec(name, echo_dir))
        assert gateway.invoke(name, {})[0] == 200
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                gateway.invoke("a", {"sleep": 0.05}, timeout=5)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert gateway.proc is not None
    below = _descendants(gateway.proc.pid)
    assert below, "the gateway has replica processes"
    os.kill(gateway.proc.pid, signal.SIGKILL)  # the gateway only: its replicas must die with it
    gateway.proc.wait(10)
    deadline = time.monotonic() + 15
    while any(pid_alive(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert not [p for p in below if pid_alive(p)], "replicas outlived the gateway"
    gateway.proc = None
    gateway.start()
    assert sorted(f["name"] for f in gateway.admin("GET", "/system/functions")[1]) == ["a", "b"]
    for name in ("a", "b"):
        status, _, body = gateway.invoke(name, {"back": name})
        assert status == 200 and body["echo"] == {"back": name}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    return filler


def test_a_full_state_disk_is_a_clear_error_and_nothing_is_corrupted(small_disk: Path, echo_dir: Path,
                                                                     tmp_path: Path) -> None:
    gw = Gateway(small_disk / "state")
    gw.log_path = tmp_path / "gateway.log"  # the gateway's own log is not on the disk that fills up
    gw.start()
    try:
        gw.deploy(gw.python_spec("kept", echo_dir))
        assert gw.invoke("kept", {})[0] == 200
        filler = _fill(small_disk)
        spec = gw.python_spec("new", echo_dir)
        status, body = gw.admin("POST", "/system/functions", {"service": "new", "hydro": spec})
        assert status == 507, body
        assert body["code"] == "insufficient_storage" and "state directory" in body["error"] and "full" in body["error"]
        assert "Traceback" not in gw.log()
        status, _, body = gw.invoke("kept", {"still": 1})  # what was deployed keeps serving
        assert status == 200 and body["echo"] == {"still": 1}
        filler.unlink()
        gw.deploy(spec)
        gw.restart()
        names = sorted(f["name"] for f in gw.admin("GET", "/system/functions")[1])
        assert names == ["kept", "new"]
        with contextlib.closing(sqlite3.connect(small_disk / "state" / "gateway.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        gw.stop()


IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]  # a setosa and a virginica
IRIS_SIGNATURE = {"inputs": [{"name": f"f{i}", "dtype": "float64"} for i in range(4)],
                  "outputs": [{"name": "label", "dtype": "int64"}]}
IRIS_RECORDS = [{f"f{i}": v for i, v in enumerate(row)} for row in IRIS_ROWS]


def test_s3_stopped_cached_models_serve_and_uncached_cold_starts_are_503_naming_the_store(
        gateway_factory: Any, iris_model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private moto S3 server the test can stop (the shared RGW must stay up for everyone)."""
    from moto.server import ThreadedMotoServer

    from hydro_serving.store import open_store
    from tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    stopped = False
    try:
        for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HYDRO_STORE", "s3://hydro-faults/models")
        store = open_store()
        cached = store.upload(iris_model_file, "iris", framework="sklearn")
        uncached = store.upload(iris_model_file, "iris-other", framework="sklearn")
        gw = gateway_factory("--discover-interval", "0", "--cold-start-timeout", "30")
        for name, manifest in (("cached", cached), ("uncached", uncached)):
            gw.deploy({"name": name, "lang": "sklearn", "model": manifest.ref, "signature": IRIS_SIGNATURE,
                       "scale": {"min": 0, "max": 1, "idle": 300, "concurrency": 8}})
        status, _, body = gw.invoke("cached", IRIS_RECORDS)  # cold start: fetched, then cached
        assert status == 200, body

        server.stop()
        stopped = True
        status, _, body = gw.invoke("cached", IRIS_RECORDS)  # a warm replica keeps serving
        assert status == 200, body
        assert gw.admin("POST", "/system/scale-function/cached", {"replicas": 0})[0] == 202
        gw.wait_for(lambda: gw.status("cached")["replicas"] == 0, what="the cached function at zero")
        status, headers, body = gw.invoke("cached", IRIS_RECORDS)  # a cold start from the cache
        assert status == 200 and headers["X-Cold-Start"] == "true", body

        status, _, body = gw.invoke("uncached", IRIS_RECORDS, headers={"X-Request-Id": "s3-down"})
        assert status == 503, body
        assert body["function"] == "uncached" and "store" in body["error"] and body["request_id"] == "s3-down"
        assert "Traceback" not in gw.log()
    finally:
        if not stopped:
            server.stop()
