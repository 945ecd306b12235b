"""A real HTTP server on 127.0.0.1 that plays the gateway for the router's integration tests.

It is not a mock of the router's client: the router talks real HTTP (keep-alive, timeouts,
dropped sockets) to it. It stands in for the gateway plus functions because these tests are about
the router's behaviour when stages answer, refuse, hang or vanish, which a real gateway cannot be
made to do on cue. End-to-end tests through the real gateway live in test_pipeline_e2e.py.

Every ``/function/<name>`` behaves by the ``behaviours`` table; every call is recorded.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DROP = "drop"  # behaviour result: close the socket without answering


@dataclass
class Call:
    function: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    prewarm: bool


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


Behaviour = Callable[[Call], "Reply | str"]


def appender(name: str) -> Behaviour:
    """A transform stage: appends its name to ``trail`` of the JSON body it got."""

    def run(call: Call) -> Reply:
        data = json.loads(call.body)
        if not isinstance(data, dict):
            data = {"input": data}
        data["trail"] = [*data.get("trail", []), name]
        return Reply(body=json.dumps(data).encode())

    return run


class FakeGateway:
    """The recording, behaving HTTP server; ``url`` is its base address.

    ``Reply``, ``DROP`` and ``appender`` hang off the class because test modules cannot import
    conftest under pytest's importlib mode.
    """

    Reply = Reply
    DROP = DROP
    appender = staticmethod(appender)

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.calls: list[Call] = []
        self.release = threading.Event()  # set at teardown so slow handlers stop waiting
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # keep test output quiet
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without NODELAY, Nagle + delayed ACK add 40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                if not path.startswith("/function/"):
                    self._send(Reply(404, b'{"error": "not found"}'))
                    return
                name = path.removeprefix("/function/").split("/", 1)[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                prewarm = headers.get("x-hydro-prewarm") == "true"
                call = Call(name, headers, body, prewarm)
                with gateway._lock:
                    gateway.calls.append(call)
                    cold = name not in gateway._seen
                    gateway._seen.add(name)
                if prewarm:
                    self._send(Reply(202, b'{"status": "starting"}'))
                    return
                behaviour = gateway.behaviours.get(name)
                if behaviour is None:
                    self._send(Reply(404, json.dumps({"error": f"no function '{name}'"}).encode()))
                    return
                result = behaviour(call)
                if result == DROP:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                assert isinstance(result, Reply)
                result.headers.setdefault("X-Cold-Start", "true" if cold else "false")
                self._send(result)

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def slow(self, seconds: float, then: Behaviour) -> Behaviour:
        """Wait ``seconds`` (cut short at teardown) and then behave like ``then``."""

        def run(call: Call) -> Reply | str:
            self.release.wait(seconds)
            return then(call)

        return run

    def invoked(self, name: str) -> list[Call]:
        """Real invocations of ``name`` (prewarms excluded)."""
        with self._lock:
            return [c for c in self.calls if c.function == name and not c.prewarm]

    def prewarmed(self, name: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.function == name and c.prewarm]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake_gateway() -> Iterator[FakeGateway]:
    gateway = FakeGateway()
    yield gateway
    gateway.close()


# ---- the real gateway (end-to-end tests) ---------------------------------------------------------


def _gateway_helpers() -> Any:
    """tests/gateway/conftest.py, loaded by path: the gateway engineer's Gateway process helper.

    Conftests are not importable as modules under pytest's importlib mode; loading it under a
    private name reuses the one definition of how a test starts and stops a real gateway.
    """
    import importlib.util
    import sys
    from pathlib import Path

    name = "_hydro_tests_gateway_conftest"
    module = sys.modules.get(name)
    if module is None:
        path = Path(__file__).resolve().parents[1] / "gateway" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def real_gateway(tmp_path) -> Iterator[Any]:
    """A real gateway process (local provider) with its own state; stopped with its replicas."""
    gw = _gateway_helpers().Gateway(tmp_path / "gw-state")
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()
