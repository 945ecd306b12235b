"""The http+unix transport against a real aiohttp server listening on a unix socket (in a thread here)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hydro_serving.errors import ConfigError
from hydro_serving.transport import TransportError, open_transport
from hydro_serving.transport.http import ConnectRetry
from hydro_serving.transport.unix import UnixHttpTransport, socket_path, unix_url


def _app(calls: list[tuple[str, dict[str, str], bytes]]) -> web.Application:
    async def function(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        calls.append((request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        name = request.match_info["name"]
        if name == "sleepy":
            await asyncio.sleep(1.0)
        if name == "cut":  # a response cut short: the function may have run
            assert request.transport is not None
            request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            request.transport.close()
            return web.Response()
        status = 503 if name == "busy" else 200
        return web.json_response({"function": name, "body": body.decode()}, status=status,
                                 headers={"X-Cold-Start": "true"})

    app = web.Application()
    app.router.add_post("/function/{name}", function)
    return app


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[tuple[str, list[Any]]]:
    """A real aiohttp server on ``<tmp>/gw.sock`` in its own event loop thread."""
    path = str(tmp_path / "gw.sock")
    calls: list[Any] = []
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(calls), access_log=None)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.UnixSite(runner, path).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield path, calls
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_url_round_trip_and_bad_urls() -> None:
    assert unix_url("/run/hydro/gw.sock") == "http+unix://%2Frun%2Fhydro%2Fgw.sock"
    assert socket_path(unix_url("/run/hydro/gw sock")) == "/run/hydro/gw sock"
    for bad in ("http+unix://", "http://127.0.0.1:8080", "http+unix://%00x"):
        with pytest.raises(ConfigError) as info:
            socket_path(bad)
        assert info.value.field == "transport"


def test_open_transport_builds_the_unix_transport_and_calls_the_function(unix_server: Any) -> None:
    path, calls = unix_server
    transport = open_transport(unix_url(path), {"Authorization": "Bearer k"})
    assert isinstance(transport, UnixHttpTransport)
    reply = transport.invoke("echo/../x y", b'{"a": 1}', {"X-Hydro-Stage": "0"}, timeout=5)
    assert reply.status == 200 and reply.ok
    assert reply.headers["x-cold-start"] == "true"
    assert reply.content_type.startswith("application/json")
    path_seen, headers, body = calls[-1]
    assert path_seen == "/function/echo/../x y"  # sent quoted as one segment (%2F); request.path decodes it
    assert headers["authorization"] == "Bearer k" and headers["x-hydro-stage"] == "0"
    assert body == b'{"a": 1}'
    transport.close()


def test_connections_are_kept_alive(unix_server: Any) -> None:
    path, _ = unix_server
    transport = UnixHttpTransport(unix_url(path))
    for _ in range(5):
        assert transport.invoke("echo", b"{}", {}, timeout=5).status == 200
    assert transport._unix_pool.opened == 1  # one socket reused for all five calls
    transport.close()


def test_any_status_is_a_reply(unix_server: Any) -> None:
    path, _ = unix_server
    reply = UnixHttpTransport(unix_url(path)).invoke("busy", b"{}", {}, timeout=5)
    assert reply.status == 503 and not reply.ok


def test_missing_socket_is_a_retried_connect_error(tmp_path: Path) -> None:
    sleeps: list[float] = []
    transport = UnixHttpTransport(unix_url(str(tmp_path / "nobody.sock")), retry=ConnectRetry(attempts=2),
                                  sleep=sleeps.append)
    with pytest.raises(TransportError) as info:
        transport.invoke("echo", b"{}", {}, timeout=5)
    assert info.value.kind == "connect" and info.value.retryable
    assert info.value.attempts == 3 and len(sleeps) == 2


def test_a_socket_nobody_listens_on_is_a_connect_error(tmp_path: Path) -> None:
    import socket

    dead = str(tmp_path / "dead.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(dead)  # bound, never listening, then closed: the file stays, connect is refused
    sock.close()
    assert os.path.exists(dead)
    with pytest.raises(TransportError) as info:
        UnixHttpTransport(unix_url(dead), retry=ConnectRetry(attempts=0)).invoke("echo", b"{}", {}, timeout=5)
    assert info.value.kind == "connect"


def test_timeout_and_lost_connection_are_final(unix_server: Any) -> None:
    path, calls = unix_server
    transport = UnixHttpTransport(unix_url(path))
    with pytest.raises(TransportError) as info:
        transport.invoke("sleepy", b"{}", {}, timeout=0.3)
    assert info.value.kind == "timeout" and not info.value.retryable
    with pytest.raises(TransportError) as info:
        transport.invoke("cut", b"{}", {}, timeout=5)
    assert info.value.kind == "connection_lost"
    assert [c[0] for c in calls] == ["/function/sleepy", "/function/cut"]  # each called once, never retried
