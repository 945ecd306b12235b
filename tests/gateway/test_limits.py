"""Resource bounds at the gateway's door (issue 12, point 1), against a real gateway process.

An anonymous caller must not be able to grow the gateway's memory or hold its connections: oversized
bodies are refused from their Content-Length (413), chunked ones are cut at the limit, slow bodies get
408 and a closed connection, slow headers a closed connection, held requests during a cold start are
bounded per function (``scale.queue``, then 429), and open connections are capped. Raw sockets are
used where an HTTP library would hide what the server does with the connection.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _connect(gw: Any, timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response (status, headers, body by Content-Length) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the peer closes the connection (EOF or reset) within ``seconds``; reads and drops data."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def _post_head(name: str, length: int | None, extra: str = "") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST /function/{name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{size}{extra}\r\n"
            ).encode()


def test_40mib_bodies_to_a_cold_function_are_refused_and_memory_stays_flat(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(gateway.python_spec("echo", echo_dir))
    pid = gateway.proc.pid
    for _ in range(3):  # warm the gateway's own code paths before the baseline
        assert gateway.invoke("nope", {})[0] == 404
    baseline = _rss_mb(pid)

    def big_by_length(_: int) -> int:
        with _connect(gateway) as sock:
            sock.sendall(_post_head("echo", 40 * MiB))
            sock.sendall(b"x" * MiB)  # a first MiB of the body: the answer must not wait for the rest
            return _read_response(sock)[0]

    def big_chunked(_: int) -> int:
        with _connect(gateway) as sock:
            sock.sendall(_post_head("echo", None))
            chunk = b"%x\r\n%s\r\n" % (MiB, b"y" * MiB)
            try:
                for _ in range(40):
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the gateway stopped reading past the limit and closed: the answer is already sent
            return _read_response(sock)[0]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(big_by_length, range(50)))
    assert set(statuses) <= {413, 429}, statuses
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        chunked = list(pool.map(big_chunked, range(10)))
    assert set(chunked) <= {413, 429}, chunked
    time.sleep(1.0)
    after = _rss_mb(pid)
    assert after - baseline < 50, f"gateway RSS grew from {baseline:.0f} MB to {after:.0f} MB"
    assert gateway.status("echo")["replicas"] == 0  # no replica was started for refused bodies
    status, _, body = gateway.invoke("echo", {"a": 1})  # the function itself is fine
    assert status == 200 and body["echo"] == {"a": 1}


def test_413_body_names_the_limit_and_limits_body_is_per_function(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(gateway.python_spec("small", echo_dir, limits={"body": "1Ki"}))
    status, _, body = gateway.invoke("small", {"x": "a" * 2000})
    assert status == 413, body
    assert body["code"] == "payload_too_large" and body["field"] == "limits.body" and body["function"] == "small"
    assert "1024" in body["error"]
    assert gateway.invoke("small", {"x": "a" * 100})[0] == 200
    # a limit above the default holds end to end: the runtime takes the function's limits.body too
    gateway.deploy(gateway.python_spec("large", echo_dir, limits={"body": "12Mi"}))
    status, _, body = gateway.invoke("large", {"x": "b" * (11 * MiB)})
    assert status == 200 and len(body["echo"]["x"]) == 11 * MiB
    status, _, body = gateway.invoke("large", {"x": "b" * (13 * MiB)})
    assert status == 413 and body["field"] == "limits.body", body
    # the deployment API refuses a malformed limit, naming it
    status, out = gateway.admin("POST", "/system/functions",
                                {"service": "bad", "limits": {"body": "lots"},
                                 "hydro": gateway.python_spec("bad", echo_dir)})
    assert status == 400 and out["field"].endswith("limits.body"), out


def test_slow_bodies_get_408_and_are_closed_within_the_read_timeout(gateway_factory: Any, echo_dir: Path) -> None:
    gw = gateway_factory("--body-timeout", "2", "--header-timeout", "3")
    gw.deploy(gw.python_spec("echo", echo_dir))
    socks = []
    started = time.monotonic()
    for _ in range(20):
        sock = _connect(gw)
        sock.sendall(_post_head("echo", 1000) + b'{"a": ')  # then nothing more
        socks.append(sock)
    try:
        for sock in socks:
            status, _, body = _read_response(sock)
            assert status == 408 and json.loads(body)["code"] == "request_timeout"
            assert _closed_within(sock, 2.0)
        assert time.monotonic() - started < 2 + 3  # the read timeout plus slack, not minutes
    finally:
        for sock in socks:
            sock.close()
    assert gw.status("echo")["replicas"] == 0  # nothing started for requests that never arrived


def test_slow_headers_are_closed_within_the_header_timeout(gateway_factory: Any) -> None:
    gw = gateway_factory("--header-timeout", "2")
    socks = []
    started = time.monotonic()
    for _ in range(20):
        sock = _connect(gw)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers never finished
        socks.append(sock)
    try:
        for sock in socks:
            assert _closed_within(sock, 5.0)
        assert time.monotonic() - started < 2 + 3
    finally:
        for sock in socks:
            sock.close()
    assert gw.http("GET", gw.url + "/healthz")[0] == 200


def test_open_connections_are_capped(gateway_factory: Any) -> None:
    gw = gateway_factory("--max-connections", "5", "--header-timeout", "60")
    socks = [_connect(gw) for _ in range(5)]
    try:
        time.sleep(0.3)
        with _connect(gw) as extra:
            status, headers, body = _read_response(extra)
            assert status == 503 and headers["retry-after"] == "1"
            assert json.loads(body)["code"] == "unavailable"
    finally:
        for sock in socks:
            sock.close()
    gw.wait_for(lambda: gw.http("GET", gw.url + "/healthz")[0] == 200, what="a free connection slot")


def test_requests_held_during_a_cold_start_are_bounded(gateway: Any, tmp_path: Path) -> None:
    slow = gateway.write_handler(tmp_path / "slow", "import time\ntime.sleep(4)\n\ndef handle(p, c):\n    return p\n")
    gateway.deploy(gateway.python_spec("slow", slow, scale={"queue": 3}))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(gateway.invoke, "slow", {"i": i}) for i in range(8)]
        results = [f.result() for f in futures]
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 3 + [429] * 5, statuses
    refused = next(r for r in results if r[0] == 429)
    assert refused[1]["Retry-After"] == "1"
    assert refused[2]["field"] == "scale.queue" and refused[2]["function"] == "slow"
