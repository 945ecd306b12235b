"""Run the gateway in the foreground until SIGTERM/SIGINT, then stop every replica."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from hydro_serving.errors import ConfigError
from hydro_serving.gateway.app import create_app
from hydro_serving.gateway.config import GatewayConfig

log = logging.getLogger("hydro.gateway")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
SHUTDOWN_GRACE_SECONDS = 10.0  # how long a stopping gateway lets requests in flight finish


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (``pip install uvloop``), else asyncio's own loop.

    Why: every invocation crosses the gateway twice (request in, replica call out), and the gateway
    shares the machine's cores with the replicas it proxies to; uvloop's libuv transports spend
    less CPU per request than asyncio's selector loop, which is CPU the replicas get back.
    Measured on the bench machine: the gateway hop at c=1 fell from +0.6-1.0 ms to +0.3 ms p50, and
    req/s through the gateway at c=32 rose ~20% (BENCHMARKS.md). ``HYDRO_UVLOOP=0`` keeps asyncio's
    loop (for A/B measurement or a uvloop bug). The import is optional so the gateway still runs
    where uvloop has no wheel (Windows, PyPy).
    """
    if os.environ.get("HYDRO_UVLOOP", "").strip().lower() not in ("0", "false", "no", "off"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class _Refuse(asyncio.Protocol):
    """A connection over the cap: one 503 with ``Retry-After`` and ``Connection: close``, nothing read."""

    BODY = json.dumps({"error": "the gateway has too many open connections; retry later",
                       "code": "unavailable"}).encode()
    RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.RESPONSE)  # type: ignore[attr-defined] # a stream transport (uvloop's is no subclass)
        transport.close()


def capped_factory(server: Callable[[], asyncio.Protocol], connections: Callable[[], int],
                   limit: int) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of the listening socket: aiohttp's handler while fewer than ``limit`` are open.

    Why not only the kernel's backlog: an accepted connection costs a handler, buffers and a file
    descriptor; the cap bounds them whatever callers open (idle keep-alive ones included, which the
    header timeout closes).
    """

    def factory() -> asyncio.Protocol:
        if connections() >= limit:
            return _Refuse()
        return server()

    return factory


def tune_malloc() -> None:
    """Give freed request bodies back to the OS: a fixed mmap threshold (glibc only; elsewhere nothing).

    glibc raises its mmap threshold dynamically up to 32 MiB once a large block is freed, after which
    multi-MiB bodies come from the heap and RSS stays at its high-water mark after a burst (issue 12
    measured 55 -> 234 MB that never came back). Fixing the threshold at 256 KiB keeps every large
    body in its own mapping, returned on free.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 256 * 1024)


UNIX_SOCKET_MODE = 0o666  # like the TCP port on 127.0.0.1: any local process may call, the gateway's auth applies


def bind_unix_socket(path: Path) -> socket.socket:
    """The gateway's listening unix socket at ``path``: a stale socket there is replaced, anything else refused.

    Bound before the application starts, so a router replica warmed at start already finds it.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"cannot listen on {path}: it exists and is not a socket", field="unix_socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            os.unlink(path)  # stale: left by a gateway that was killed
        else:
            raise ConfigError(f"cannot listen on {path}: another process is listening there", field="unix_socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the state directory on a first start
        sock.bind(str(path))
        os.chmod(path, UNIX_SOCKET_MODE)
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}", field="unix_socket") from None
    sock.setblocking(False)
    return sock


async def serve(app: web.Application, config: GatewayConfig) -> None:
    """Listen until cancelled (a signal), then shut down gracefully: replicas are stopped by app cleanup.

    aiohttp's own ``run_app`` has no connection cap, so the listening socket is created here with
    :func:`capped_factory`; ``keepalive_timeout`` doubles as the header timeout (aiohttp arms it when a
    connection opens and closes a connection still waiting for a complete request when it fires).
    """
    unix_sock = bind_unix_socket(config.unix_socket) if config.unix_socket is not None else None
    runner = web.AppRunner(app, access_log=None, handle_signals=True, shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
                           keepalive_timeout=config.header_timeout)
    await runner.setup()
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()
    factory = capped_factory(server, lambda: len(server.connections), config.max_connections)
    listeners: list[asyncio.AbstractServer] = []
    try:
        listeners.append(await loop.create_server(factory, config.host, config.port, reuse_address=True,
                                                  backlog=512))
        if unix_sock is not None:
            listeners.append(await loop.create_unix_server(factory, sock=unix_sock, backlog=512))
    except OSError as exc:  # typically: the port is taken
        for listener in listeners:
            listener.close()
        await runner.cleanup()
        _remove_socket(config.unix_socket)
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                          field="port") from None
    also = f" and {config.unix_socket}" if config.unix_socket is not None else ""
    print(f"hydro gateway on {config.url}{also} (provider {config.provider}, state {config.state_dir})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        log.info("stopping: no new connections; requests in flight get up to %gs", SHUTDOWN_GRACE_SECONDS)
        for listener in listeners:
            listener.close()
        await runner.cleanup()
        _remove_socket(config.unix_socket)


def _remove_socket(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def quiet_malformed_requests(record: logging.LogRecord) -> bool:
    """A logging filter for ``aiohttp.server``: a malformed request is the caller's fault, not a traceback.

    aiohttp answers it 400 itself and logs the parser's exception with its traceback; a hostile caller
    could fill the log that way. The record is kept, as one line without the traceback.
    """
    from aiohttp.http_exceptions import HttpProcessingError

    if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
        record.msg = f"malformed request refused (400): {record.exc_info[1].message!r}"[:300]
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def run_gateway(config: GatewayConfig) -> None:
    """Serve until a signal; aiohttp's cleanup hook stops the replicas (no orphans).

    No access log: formatting a line per request costs more than the proxying itself on small
    requests; the gateway's Prometheus metrics count every request instead.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("aiohttp.server").addFilter(quiet_malformed_requests)
    tune_malloc()
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    log.info("event loop: %s", type(loop).__module__)
    app = create_app(config)
    main = loop.create_task(serve(app, config))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, web.GracefulExit):
                loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        forget_pid_file(config)


def forget_pid_file(config: GatewayConfig) -> None:
    """Remove ``<state>/gateway.pid`` (written by ``hydro up``) when it names this process: no stale file left."""
    path = config.state_dir / "gateway.pid"
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()
