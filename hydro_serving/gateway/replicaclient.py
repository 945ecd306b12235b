"""The invocation hop's HTTP/1.1 client: one keep-alive pool of raw connections per replica.

Why not aiohttp's client, which the gateway uses everywhere else: on the invocation path it was the
largest part of the gateway's own CPU per request. Measured on this project's 2-core machine (iris,
one row per request, wrk -c8, 2026-11-30): a bare aiohttp server forwarding through
``aiohttp.ClientSession`` spent ~160 us of CPU per request, the same server forwarding through this
client ~100 us, and the whole gateway ~190 us before the change. On a machine whose cores the
replicas already keep busy, the gateway's CPU per request is what its throughput loses against
calling the replica directly (BENCHMARKS.md, issue 18 point 2).

What makes it cheaper: the request head and body leave in one ``write``; the response is parsed by
``httptools`` (llhttp, the parser Node.js uses) in C callbacks into a list; no per-request objects
beyond a future and the reply; no cookie jar, tracing hooks, redirects, decompression or URL
objects. It does only what the hop needs, and everything else in the gateway (probes, async
attempts, callbacks, the UI) keeps aiohttp.

What it keeps from the aiohttp path it replaces:

* a unix-socket replica's listener must be the replica's own process (``SO_PEERCRED``, as
  :class:`hydro_serving.gateway.upstream.ReplicaConnector` checks): a function that links its socket
  path to another function's socket gets :class:`ReplicaRefused`, never the other function;
* idle connections are dropped after :data:`~hydro_serving.gateway.upstream.KEEPALIVE` seconds,
  before the runtime closes them, so a request is not sent on a connection being closed;
* framing by ``Content-Length``, ``chunked`` or the end of the connection; ``HEAD`` and
  1xx/204/304 answers without a body; the body is forwarded as received (no decompression);
* a malformed, oversized (head over :data:`MAX_HEAD_BYTES`) or cut-off answer is
  :class:`ReplicaDisconnected` and its connection is closed, never reused;
* a header name or value that would split the request (CR, LF, NUL) is refused before anything is
  sent.

Errors say what the caller may do: :class:`ReplicaRefused` means nothing was sent (safe to retry on
another replica), :class:`ReplicaDisconnected` means the replica may have run the request, and
``TimeoutError`` means the whole request took longer than allowed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterable
from typing import Any

import httptools
from multidict import CIMultiDict

from hydro_serving.gateway.upstream import KEEPALIVE, is_replica_process, peer_credentials

MAX_HEAD_BYTES = 64 * 1024  # a replica's status line and headers; more is a broken or hostile replica
MAX_IDLE = 64  # kept-alive connections per replica beyond this are closed after use
_NO_BODY_STATUS = frozenset({204, 304})


class ReplicaRefused(ConnectionError):
    """No connection could be made (refused, missing socket, wrong listener): nothing was sent."""


class ReplicaDisconnected(ConnectionError):
    """The connection broke or the answer was malformed after the request went out."""


class UnsafeHeader(ValueError):
    """A header name or value with CR, LF or NUL: sending it would split the request."""


class Reply:
    """A replica's complete answer: status, headers (as sent, case-insensitive) and body bytes."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One kept-alive connection; at most one request in flight (no pipelining)."""

    def __init__(self, client: ReplicaClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Reply] | None = None
        self.head_request = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.head_bytes = 0
        self.headers_done = False
        self.framed = False  # Content-Length or chunked: the end is known without closing the connection

    # ---- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self._abort(None)
            return
        if not self.headers_done:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._abort(ReplicaDisconnected("the replica switched protocols, which the gateway does not forward"))
        except httptools.HttpParserError as exc:
            self._abort(ReplicaDisconnected(f"malformed answer from the replica: {exc}"))
        if not self.headers_done and self.head_bytes > MAX_HEAD_BYTES and self.waiter is not None:
            self._abort(ReplicaDisconnected(f"the replica's answer head exceeds {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._gone(self)
        if self.waiter is None or self.waiter.done():
            return
        if self.headers_done and not self.framed:  # framed by the end of the connection: this is the end
            self._finish()
            return
        self.waiter.set_exception(ReplicaDisconnected(
            "the replica closed the connection before its answer was complete"
            + (f" ({exc})" if exc else "")))

    # ---- httptools callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiter is None and self.transport is not None:  # an answer nobody asked for, in the same read
            self.transport.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (103 Early Hints): the real one follows
            self.headers_done = False
            self.headers = []
            return
        lowered = {name.lower() for name, _ in self.headers}
        self.framed = b"content-length" in lowered or b"transfer-encoding" in lowered
        if self.head_request or status in _NO_BODY_STATUS:
            self.framed = True
            self._finish()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.headers_done and self.waiter is not None and not self.waiter.done():
            self._finish()

    # ---- internals -----------------------------------------------------------------------------------

    def _finish(self) -> None:
        waiter, self.waiter = self.waiter, None
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in self.headers:
            headers.add(name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        reply = Reply(self.parser.get_status_code(), headers, b"".join(self.chunks))
        reusable = (self.framed and not self.head_request and self.parser.should_keep_alive()
                    and self.transport is not None and not self.transport.is_closing())
        self._reset()
        if reusable:  # the same parser reads the next answer: llhttp resets itself between messages
            self.client._idle(self)
        elif self.transport is not None:
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def _abort(self, exc: Exception | None) -> None:
        waiter, self.waiter = self.waiter, None
        if self.transport is not None:
            self.transport.abort()
        if waiter is not None and not waiter.done() and exc is not None:
            waiter.set_exception(exc)

    def send(self, head: bytes, body: bytes, head_request: bool) -> asyncio.Future[Reply]:
        assert self.transport is not None
        self.head_request = head_request
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self.waiter


class ReplicaClient:
    """``await client.request(method, target, headers, body, timeout)`` -> :class:`Reply` for one replica.

    ``endpoint`` is the replica's base URL (``http://host:port``; for a unix-socket replica the Host it
    is sent, ``http://localhost``), ``socket`` its unix socket path or None, ``expected_pid`` the
    process that must be listening on that socket.
    """

    def __init__(self, endpoint: str, socket: str | None = None, expected_pid: int | None = None) -> None:
        scheme, _, rest = endpoint.partition("://")
        if scheme != "http" or not rest:
            raise ValueError(f"the replica client speaks plain http, not {endpoint!r}")
        self.netloc = rest.split("/", 1)[0]
        self.socket = socket
        self.expected_pid = expected_pid
        host, _, port = self.netloc.rpartition(":")
        self.host, self.port = (host.strip("[]"), int(port)) if port.isdigit() else (self.netloc, 80)
        self._host_line = f"Host: {self.netloc}\r\n"
        self._idle_pool: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()
        self.closed = False

    # ---- the pool ------------------------------------------------------------------------------------

    def _idle(self, conn: _Connection) -> None:
        if self.closed or len(self._idle_pool) >= MAX_IDLE:
            if conn.transport is not None:
                conn.transport.close()
            return
        conn.idle_since = time.monotonic()
        self._idle_pool.append(conn)

    def _gone(self, conn: _Connection) -> None:
        self._all.discard(conn)
        with contextlib.suppress(ValueError):  # not idle: it was in use, or already taken out
            self._idle_pool.remove(conn)

    async def _connection(self, timeout: float) -> _Connection:
        now = time.monotonic()
        while self._idle_pool:
            conn = self._idle_pool.pop()  # the most recently used: warm, and the stale ones age out at the left
            if conn.transport is not None and not conn.transport.is_closing() and now - conn.idle_since < KEEPALIVE:
                return conn
            if conn.transport is not None:
                conn.transport.close()
        if self.closed:
            raise ReplicaRefused("the replica was stopped")
        loop = asyncio.get_running_loop()
        try:
            if self.socket is not None:
                connect = loop.create_unix_connection(lambda: _Connection(self), self.socket)
            else:
                connect = loop.create_connection(lambda: _Connection(self), self.host, self.port)
            transport, conn = await asyncio.wait_for(connect, timeout)
        except (OSError, TimeoutError) as exc:
            target = self.socket or f"{self.host}:{self.port}"
            raise ReplicaRefused(f"cannot connect to {target}: {exc or type(exc).__name__}") from None
        if self.socket is not None and self.expected_pid is not None:
            creds = peer_credentials(transport.get_extra_info("socket"))
            if creds is not None and not is_replica_process(creds[0], self.expected_pid):
                transport.abort()
                raise ReplicaRefused(f"the process listening on {self.socket} (pid {creds[0]}) is not the "
                                     f"replica's (pid {self.expected_pid})")
        self._all.add(conn)
        return conn

    # ---- requests ------------------------------------------------------------------------------------

    def _head(self, method: str, target: str, headers: Iterable[tuple[str, str]], length: int) -> bytes:
        if " " in target or not target.startswith("/"):
            raise UnsafeHeader(f"request target {target!r} is not valid on the wire")
        lines = [f"{method} {target} HTTP/1.1\r\n", self._host_line]
        lines.extend([f"{name}: {value}\r\n" for name, value in headers])
        if length or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(f"Content-Length: {length}\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        # one count instead of a scan per header: every line break must be one of ours
        breaks = len(lines)
        if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
            raise UnsafeHeader("a header name or value, the method or the target holds a line break or NUL")
        return text.encode("utf-8", "surrogateescape")

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes,
                      timeout: float) -> Reply:
        """Send one request and read the whole answer within ``timeout`` seconds (connect included).

        ``target`` is the request target as it goes on the wire (path and query, already encoded);
        ``headers`` must not hold Host, Content-Length or hop-by-hop headers (the caller filters them).
        """
        head = self._head(method, target, headers, len(body))
        deadline = time.monotonic() + timeout
        conn = await self._connection(timeout)
        waiter = conn.send(head, body, method == "HEAD")
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), _expire, conn, waiter)
        try:
            return await waiter
        except BaseException:  # timeout, cancellation, a broken answer: this connection is done
            if conn.transport is not None:
                conn.transport.abort()
            raise
        finally:
            timer.cancel()

    async def close(self) -> None:
        """Close every connection; later requests are refused (the replica was stopped)."""
        self.closed = True
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle_pool.clear()
        self._all.clear()


def _expire(conn: _Connection, waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the replica did not answer in time"))
    conn.waiter = None
    if conn.transport is not None:
        conn.transport.abort()
