"""Every hostile input is a 4xx (issue 12, point 5), against one real gateway and real replicas.

Each case was a 500 (and a traceback in the log) or slipped through before: percent-encoded and
oversized names, non-ASCII and duplicate ``Authorization`` headers, JSON nested past the limit (at the
gateway and in the runtime), invalid UTF-8, wrong methods (405 with ``Allow``), a non-JSON admin body
(415). 5xx bodies name the function and the request id, never the internal cause, which is logged once.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_fixtures import Gateway, python_spec, write_handler

HANDLER = '''
import os
import signal


def handle(payload, context):
    """Echo, report the request id the gateway passed, or die mid-request when asked."""
    if isinstance(payload, dict) and payload.get("die"):
        os.kill(os.getpid(), signal.SIGKILL)  # this worker dies mid-request
    headers = {k.lower(): v for k, v in context.headers.items()}
    return {"echo": payload, "request_id": headers.get("x-request-id")}
'''


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("hostile")
    gateway = Gateway(root / "state")
    gateway.start()
    gateway.deploy(python_spec("echo", write_handler(root / "echo", HANDLER)))
    broken = write_handler(root / "broken", "raise RuntimeError('ConfigError: options.method: secret detail')\n")
    gateway.deploy(python_spec("broken", broken))
    yield gateway
    gateway.stop()


def _raw(gw: Gateway, request: bytes) -> tuple[int, dict[str, str], Any]:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    try:
        parsed = json.loads(body) if body else None
    except ValueError:  # aiohttp's own parser answers malformed header bytes in plain text
        parsed = body.decode("latin-1")
    return int(lines[0].split()[1]), headers, parsed


def _no_traceback(gw: Gateway) -> None:
    assert "Traceback" not in gw.log(), gw.log()[-3000:]


@pytest.mark.parametrize("path", ["/function/%65cho", "/function/" + "a" * 300, "/function/Echo",
                                  "/function/echo%2F..", "/system/function/%65cho", "/system/scale-function/a%20b"])
def test_names_that_are_not_literal_dns_labels_are_400(gw: Gateway, path: str) -> None:
    status, headers, body = gw.request("POST", path, {}, {"Authorization": f"Bearer {gw.token}"})
    assert status == 400 and body["field"] == "name", body
    assert headers["X-Request-Id"]
    _no_traceback(gw)


@pytest.mark.parametrize("auth", [b"Authorization: Bearer \xe9\xe9\r\n", b"Authorization: Bearer a\x01b\r\n",
                                  b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"])
@pytest.mark.parametrize("path", ["/system/functions", "/function/echo"])
def test_non_ascii_or_duplicate_authorization_is_400(gw: Gateway, auth: bytes, path: str) -> None:
    status, _, body = _raw(gw, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth
                           + b"Connection: close\r\n\r\n")
    assert status == 400, body
    if b"\x01" in auth:  # a control character: aiohttp's HTTP parser refuses the request line itself
        assert "Invalid header value" in body
    else:
        assert body["field"] == "Authorization", body
    _no_traceback(gw)


def test_json_nested_past_the_limit_is_400_naming_it(gw: Gateway) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    status, _, body = gw.request("POST", "/function/echo", deep)  # the runtime's check
    assert status == 400 and "64" in body["error"] and body["field"] == "$", body
    status, _, body = gw.request("POST", "/system/functions", deep, {"Authorization": f"Bearer {gw.token}"})
    assert status == 400 and body["details"] == {"max_depth": 64} and body["field"] == "(body)", body
    ok = b'{"a": ' + b"[" * 60 + b"1" + b"]" * 60 + b"}"  # deep but within the limit
    assert gw.request("POST", "/function/echo", ok)[0] == 200
    _no_traceback(gw)
    assert "RecursionError" not in gw.log()


def test_invalid_utf8_is_400(gw: Gateway) -> None:
    status, _, body = gw.request("POST", "/function/echo", b'{"a": "\xff\xfe"}')
    assert status == 400 and body["field"] == "$", body
    status, _, body = gw.request("POST", "/system/functions", b'{"a": "\xff"}',
                                 {"Authorization": f"Bearer {gw.token}"})
    assert status == 400 and body["field"] == "(body)", body


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PATCH", "/system/functions", "DELETE, GET, POST, PUT"), ("POST", "/healthz", "GET"),
    ("DELETE", "/metrics", "GET"), ("PUT", "/system/logs", "GET"), ("GET", "/system/scale-function/echo", "POST"),
])
def test_wrong_methods_are_405_with_allow(gw: Gateway, method: str, path: str, allow: str) -> None:
    status, headers, body = gw.request(method, path, {}, {"Authorization": f"Bearer {gw.token}"})
    assert status == 405 and headers["Allow"] == allow and body["code"] == "method_not_allowed", body


def test_admin_bodies_that_are_not_json_are_415(gw: Gateway) -> None:
    status, _, body = gw.request("POST", "/system/functions", b"service=x",
                                 {"Authorization": f"Bearer {gw.token}",
                                  "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and body["field"] == "Content-Type", body


def test_request_ids_are_returned_passed_to_replicas_and_sanitised(gw: Gateway) -> None:
    status, headers, body = gw.request("POST", "/function/echo", {"a": 1}, {"X-Request-Id": "abc-123"})
    assert status == 200 and headers["X-Request-Id"] == "abc-123" and body["request_id"] == "abc-123"
    status, headers, body = gw.request("POST", "/function/echo", {"a": 1})  # none sent: one is generated
    assert status == 200 and len(headers["X-Request-Id"]) == 32 and body["request_id"] == headers["X-Request-Id"]
    status, headers, body = gw.request("POST", "/function/echo", {"a": 1}, {"X-Request-Id": "x" * 500})
    assert status == 200 and len(headers["X-Request-Id"]) == 32  # an absurd id is replaced, not echoed
    status, headers, _ = gw.request("GET", "/no/such/route")
    assert status == 404 and headers["X-Request-Id"]


def test_5xx_bodies_name_the_function_and_request_id_not_the_cause(gw: Gateway) -> None:
    status, _, body = gw.request("POST", "/function/broken", {}, {"X-Request-Id": "start-1"})
    assert status in (502, 503), body
    assert body["function"] == "broken" and body["request_id"] == "start-1" and "start-1" in body["error"]
    assert "ConfigError" not in json.dumps(body) and "secret detail" not in json.dumps(body)
    log = gw.log()
    assert "start-1" in log and "secret detail" in log  # the cause is in the log, with the id
    # the operator (internal credentials) sees the cause in the body too
    status, _, body = gw.request("POST", "/function/broken", {}, {"Authorization": f"Bearer {gw.token}"})
    assert status in (502, 503) and "secret detail" in body["error"], body

    status, _, body = gw.request("POST", "/function/echo", {"die": True}, {"X-Request-Id": "kill-1"})
    assert status == 502 and body["function"] == "echo" and body["request_id"] == "kill-1", body
    assert "Disconnected" not in body["error"] and "exit" not in body["error"], body
    assert gw.request("POST", "/function/echo", {"after": 1})[0] == 200  # the next request is fine
    _no_traceback(gw)


def test_a_log_growing_past_its_size_is_rotated(tmp_path: Path) -> None:
    from hydro_serving.gateway.logrotate import rotate_all

    logs = tmp_path / "logs"
    logs.mkdir()
    big = logs / "fn.log"
    with open(big, "ab") as writer:  # an append-mode writer, like a replica's stdout
        writer.write(b"x" * 5000)
        writer.flush()
        assert rotate_all(tmp_path, max_bytes=1000, backups=2) == [big]
        writer.write(b"after\n")
        writer.flush()
    assert big.read_bytes() == b"after\n" and (logs / "fn.log.1").stat().st_size == 5000
    for _ in range(3):
        big.write_bytes(b"y" * 2000)
        rotate_all(tmp_path, max_bytes=1000, backups=2)
    assert sorted(p.name for p in logs.iterdir()) == ["fn.log", "fn.log.1", "fn.log.2"]


def test_gateway_and_replica_logs_rotate_by_size(gateway_factory: Any, tmp_path: Path) -> None:
    """A running gateway rotates its own log and a chatty replica's log past --log-max-size."""
    gateway = gateway_factory("--log-max-size", "4Ki")
    chatty = write_handler(tmp_path / "chatty", "def handle(p, c):\n    print('x' * 100, flush=True)\n    return p\n")
    gateway.deploy(python_spec("chatty", chatty))
    for _ in range(100):  # ~10 KB of replica output
        assert gateway.invoke("chatty", {})[0] == 200
    for _ in range(40):  # malformed requests the gateway logs (one line each, no traceback): its log grows
        malformed = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\nConnection: close\r\n\r\n"
        assert _raw(gateway, malformed)[0] == 400
    replica_log = gateway.state_dir / "logs" / "chatty.log"
    gateway.wait_for(lambda: replica_log.with_name("chatty.log.1").exists(), timeout=15, what="replica log rotated")
    assert replica_log.stat().st_size < 4096 + 2048
    gateway.wait_for(lambda: gateway.log_path.with_name(gateway.log_path.name + ".1").exists(), timeout=15,
                     what="gateway log rotated")
    assert gateway.invoke("chatty", {})[0] == 200  # writers keep writing to the truncated files
