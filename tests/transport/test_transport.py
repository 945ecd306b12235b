"""The transport seam: HttpTransport against a real HTTP server on 127.0.0.1, and the scheme table."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hydro_serving.errors import ConfigError
from hydro_serving.transport import Reply, Transport, TransportError, open_transport
from hydro_serving.transport.http import ConnectRetry, HttpTransport
from hydro_serving.transport.select import Registry


class _Handler(BaseHTTPRequestHandler):
    """Answers by path: /function/sleepy sleeps, /function/cut closes mid-response, others echo."""

    calls: list[tuple[str, dict[str, str], bytes]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path == "/function/sleepy":
            time.sleep(1.0)
        if self.path == "/function/cut":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            self.close_connection = True
            return
        status = 503 if self.path == "/function/busy" else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Cold-Start", "true")
        if status == 503:
            self.send_header("Retry-After", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, list[Any]]]:
    _Handler.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.calls
    httpd.shutdown()
    httpd.server_close()


def test_http_transport_returns_any_status_as_a_reply_with_lowercase_headers(server: Any) -> None:
    url, calls = server
    transport = open_transport(url, {"Authorization": "Bearer t0ken"})
    assert isinstance(transport, HttpTransport)
    reply = transport.invoke("echo", b'{"a": 1}', {"X-Request-Id": "r1"}, timeout=5)
    assert (reply.status, reply.body, reply.ok) == (200, b'{"a": 1}', True)
    assert reply.headers["x-cold-start"] == "true" and reply.content_type == "application/json"
    path, headers, _ = calls[-1]
    assert path == "/function/echo"
    assert headers["authorization"] == "Bearer t0ken" and headers["x-request-id"] == "r1"

    busy = transport.invoke("busy", b"{}", {}, timeout=5)
    assert busy.status == 503 and not busy.ok  # an error status is a reply: the caller decides
    assert busy.retry_after(cap=5) == 5 and busy.retry_after(cap=60) == 7
    transport.close()


def test_a_function_name_cannot_walk_out_of_function_paths(server: Any) -> None:
    url, calls = server
    HttpTransport(url).invoke("../system/functions", b"{}", {}, timeout=5)
    assert calls[-1][0] == "/function/..%2Fsystem%2Ffunctions"


def test_refused_connection_is_retried_then_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens
    slept: list[float] = []
    transport = HttpTransport(f"http://127.0.0.1:{port}", retry=ConnectRetry(attempts=2, backoff=0.01),
                              sleep=slept.append)
    with pytest.raises(TransportError) as info:
        transport.invoke("echo", b"{}", {}, timeout=5)
    assert info.value.kind == "connect" and info.value.retryable and info.value.attempts == 3
    assert slept == [0.01, 0.02]


def test_read_timeout_is_final_because_the_function_may_have_run(server: Any) -> None:
    url, calls = server
    with pytest.raises(TransportError) as info:
        HttpTransport(url).invoke("sleepy", b"{}", {}, timeout=0.3)
    assert info.value.kind == "timeout" and not info.value.retryable
    assert [c[0] for c in calls] == ["/function/sleepy"]  # called once, not retried


def test_connection_lost_mid_answer_is_final(server: Any) -> None:
    url, calls = server
    with pytest.raises(TransportError) as info:
        HttpTransport(url).invoke("cut", b"{}", {}, timeout=5)
    assert info.value.kind == "connection_lost"
    assert len(calls) == 1


@pytest.mark.parametrize(("url", "words"), [
    ("http+unix://", "names no socket"),
    ("ftp://example", "known schemes are http://, http+unix://, https://, hydro-async://"),
    ("127.0.0.1:8080", "no scheme"),
    ("/just/a/path", "no scheme"),
])
def test_unknown_and_planned_schemes_are_config_errors_naming_the_field(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_transport(url)
    assert info.value.field == "transport" and words in info.value.message


def test_hydro_async_transport_submits_to_the_async_queue_with_the_callback(server: Any) -> None:
    """hydro-async:// posts to /async-function/<name> (the gateway's queue), ?callback= as X-Callback-Url."""
    url, calls = server
    target = url.replace("http://", "hydro-async://") + "?callback=http://127.0.0.1:9/cb"
    reply = open_transport(target, {"Authorization": "Bearer k"}).invoke("echo", b"{}", {}, timeout=5)
    assert reply.status == 200  # this fake server answers 200; the gateway answers 202 (tests/gateway/test_async.py)
    path, headers, body = calls[0]
    assert path == "/async-function/echo" and body == b"{}"
    assert headers["x-callback-url"] == "http://127.0.0.1:9/cb" and headers["authorization"] == "Bearer k"
    with pytest.raises(ConfigError) as info:
        open_transport("hydro-async://")
    assert info.value.field == "transport"


class _Memory(Transport):
    """A transport with no network: what a test (or a NATS/Knative transport) plugs into the seam."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.url, self.headers = url, dict(headers)

    def invoke(self, function: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        return Reply(200, function.encode() + b":" + body, {"content-type": "text/plain"})


def test_a_new_transport_is_one_registered_class() -> None:
    registry = Registry()
    registry.register("mem", _Memory)
    transport = registry.open("mem://anything", {"X-Key": "k"})
    assert isinstance(transport, _Memory) and transport.headers == {"X-Key": "k"}
    assert transport.invoke("f", b"x", {}, 1).body == b"f:x"
    assert "mem" in registry.schemes()
    with pytest.raises(ConfigError):  # the default table is untouched
        open_transport("mem://anything")


def test_transport_errors_have_known_kinds() -> None:
    with pytest.raises(ValueError):
        TransportError("weird", "x")
