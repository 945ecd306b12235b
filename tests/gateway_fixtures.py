"""The real-gateway test harness, importable by any test folder (router, demo, frameworks, bench).

A plain module, not a conftest, so it can be imported (``from tests.gateway_fixtures import
Gateway``) or registered as a plugin (``pytest_plugins = ["tests.gateway_fixtures"]`` in
tests/conftest.py) to get the fixtures everywhere:

* ``gateway``: a real gateway process (local provider) with its own state directory;
* ``gateway_factory(*extra_args)``: more gateways, e.g. ``gateway_factory("--auth-functions")``;
* ``shared_gateway``: one gateway per module, for read-only or bad-input tests;
* ``echo_dir``: a python3 function folder whose handler echoes (and can sleep).

``gateway.deploy(spec)`` takes a FunctionSpec or its dict; ``gateway.invoke(name, payload)``
returns ``(status, headers, body_json)``; every replica the test saw is killed at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
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

from hydro_serving.replica.process import pid_alive
from hydro_serving.stack import FunctionSpec


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (as tests/conftest.py's, importable from here)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

HANDLER = '''
import os
import time


def handle(payload, context):
    """Echo, optionally after a sleep; reports the serving process and a version string."""
    if isinstance(payload, dict) and payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    return {"echo": payload, "pid": os.getpid(), "version": os.environ.get("VERSION", "v1")}
'''


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call; bodies that are not bytes are sent as JSON. Never raises on an error status."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def write_handler(folder: Path, source: str = HANDLER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(source)
    return folder


def python_spec(name: str, handler_dir: Path, **kw: Any) -> dict[str, Any]:
    """The canonical dict of a python3 function (FunctionSpec.to_dict() form) for the test handler."""
    scale = {"min": 0, "max": 2, "idle": 300, "concurrency": 8, **kw.pop("scale", {})}
    return {"name": name, "lang": "python3", "handler": str(handler_dir), "scale": scale, **kw}


class Gateway:
    """A gateway process started with ``python -m hydro_serving.cli.main gateway`` on a free port."""

    def __init__(self, state_dir: Path, extra_args: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.extra_args = extra_args or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"gateway-{self.port}.log"
        self.seen_pids: set[int] = set()

    # ---- process ------------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        argv = [sys.executable, "-m", "hydro_serving.cli.main", "gateway", "--port", str(self.port),
                "--state", str(self.state_dir), *self.extra_args]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if http("GET", self.url + "/healthz", timeout=1)[0] == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop the gateway (SIGTERM: it stops its replicas) and make sure no replica survives."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            self.replica_pids()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in self.seen_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.seen_pids:  # backstop: never leave an orphan behind, even if the gateway failed
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ---- API helpers (module functions exposed here: test modules cannot import a conftest) ---------

    http = staticmethod(http)
    python_spec = staticmethod(python_spec)
    write_handler = staticmethod(write_handler)
    pid_alive = staticmethod(pid_alive)

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        status, hdrs, raw = http(method, self.url + path, body, headers)
        try:
            return status, hdrs, json.loads(raw) if raw else None
        except ValueError:
            return status, hdrs, raw

    # ---- admin --------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return json.loads((self.state_dir / "credentials.json").read_text())["token"]

    def admin(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        status, _, raw = http(method, self.url + path, body, {"Authorization": f"Bearer {token or self.token}"})
        return status, (json.loads(raw) if raw else None)

    def deploy(self, spec: FunctionSpec | dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Create or update (PUT, then POST on 404); asserts the gateway accepted it."""
        hydro = spec.to_dict() if isinstance(spec, FunctionSpec) else dict(spec)
        body = {"service": hydro["name"], **fields, "hydro": hydro}
        status, out = self.admin("PUT", "/system/functions", body)
        if status == 404:
            status, out = self.admin("POST", "/system/functions", body)
        assert status == 202, out
        return out

    def status(self, name: str) -> dict[str, Any]:
        status, out = self.admin("GET", f"/system/function/{name}")
        assert status == 200, out
        return out

    def replica_pids(self, name: str | None = None) -> list[int]:
        _, functions = self.admin("GET", "/system/functions")
        pids = [i["pid"] for f in functions if name in (None, f["name"]) for i in f["status"]["instances"]
                if i.get("pid")]
        self.seen_pids.update(pids)
        return pids

    def invoke(self, name: str, payload: Any = None, path: str = "", headers: dict[str, str] | None = None,
               timeout: float = 60.0, method: str = "POST") -> tuple[int, dict[str, str], Any]:
        status, hdrs, raw = http(method, f"{self.url}/function/{name}{path}", payload if payload is not None else {},
                                 headers, timeout=timeout)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        return status, hdrs, body

    def metrics(self) -> str:
        return http("GET", self.url + "/metrics")[2].decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when absent), e.g. metric('hydro_gateway_cold_starts_total', function='f')."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            key, _, value = line.rpartition(" ")
            if key == name and not labels:
                return float(value)
            if key.startswith(name + "{"):
                got = ",".join(sorted(key[len(name) + 1:-1].split(",")))
                if got == want:
                    return float(value)
        return 0.0

    def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; gateway log:\n{self.log()[-3000:]}")


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    """Start gateways with extra CLI args; every one is stopped (with its replicas) at teardown."""
    started: list[Gateway] = []

    def make(*extra_args: str, state_dir: Path | None = None) -> Gateway:
        gw = Gateway(state_dir or tmp_path / f"state-{len(started)}", list(extra_args))
        started.append(gw)
        gw.start()
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: Any) -> Gateway:
    """A running gateway (local provider) with its own state directory."""
    return gateway_factory()


@pytest.fixture
def echo_dir(tmp_path: Path) -> Path:
    """A python3 function folder whose handler echoes (and can sleep)."""
    return write_handler(tmp_path / "echo")


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for a module's read-only/bad-input tests (a start costs ~1 s of a shared CPU)."""
    gw = Gateway(tmp_path_factory.mktemp("gw-shared") / "state")
    gw.start()
    yield gw
    gw.stop()
