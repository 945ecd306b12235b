"""Resource bounds at the gateway's door: how big a body may be and how long a caller may take to send it.

Why here, before any replica is involved: an anonymous caller must not be able to make the gateway
hold more memory or connections than a fixed bound, whatever the function. So

* a body larger than the function's limit (``limits.body``, default the runtime's 10 MiB) is refused
  with 413 from its ``Content-Length`` before a byte of it is read, and a chunked body is cut off (413)
  as soon as it passes the limit: never more than ``limit`` bytes of one request are buffered (what the
  caller still sends is read and dropped for at most aiohttp's 10 s lingering time, so it sees the 413);
* the whole body must arrive within ``body_timeout`` seconds (slowloris: 408 and the connection is
  closed, not kept for a lingering read: the error middleware answers a 408 with :func:`send_and_close`);
* the body is read before the request waits for a cold start, so the time a caller holds a
  connection open is bounded by the read timeout plus the (bounded, ``scale.queue``) wait.

The body is read whole (up to the limit) rather than streamed to the replica, for two reasons: a
replica that refuses the connection or answers "loading" never saw the request, and the gateway
retries it with the same bytes (a streamed body could not be replayed); and a slow caller then ties up
only the gateway's cheap coroutine, never one of the replica's few worker threads (nginx buffers
request bodies by default for the same reason). What that costs is bounded: ``limit`` bytes per request,
``scale.queue`` held requests per function, ``max_connections`` connections.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from hydro_serving.errors import PayloadTooLarge, RequestTimeout, ValidationError
from hydro_serving.stack import FunctionSpec

DEFAULT_MAX_BODY = 10 * 1024 * 1024  # the runtime's own default (HYDRO_MAX_BODY_BYTES)
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_HEADER_TIMEOUT = 15.0
DEFAULT_MAX_CONNECTIONS = 1024
READ_CHUNK = 256 * 1024


def body_limit(spec: FunctionSpec, default: int) -> int:
    """The function's ``limits.body`` in bytes, else the gateway's default."""
    return spec.body_limit or default


def _too_large(function: str, limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body {what} the limit of {limit} bytes of function '{function}' "
                           "(limits.body)", field="limits.body", function=function, details={"limit": limit})


async def send_and_close(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Write ``response`` now, then close the connection: the rest of a slow body is never read.

    For the 408 of a body timeout: without this, aiohttp would linger reading what the slow caller
    still sends, which is what the timeout is meant to stop.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


async def read_body(request: web.Request, function: str, limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes, within ``timeout`` seconds; else 413 or 408.

    ``Content-Length`` above the limit is refused before anything is read; a body without one
    (chunked) is read until it passes the limit.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(function, limit, f"has {length} bytes, more than")
    if not request.body_exists:
        return b""
    content = request.content
    if length is not None and content.is_eof():  # the whole body already arrived (a small request): no wait,
        body = content.read_nowait()  # no timer, and no copy when it came in one chunk
        if len(body) == length:
            return body
        raise ValidationError(f"the request body has {len(body)} bytes, not its Content-Length {length}",
                              field="(body)", function=function)  # aiohttp's parser never lets this happen
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                buf += chunk
                if len(buf) > limit:  # the rest is read and dropped after the 413 (aiohttp's
                    buf.clear()  # bounded lingering), so the caller sees it; the traceback must not keep buf
                    raise _too_large(function, limit, "is larger than")
    except TimeoutError:
        buf.clear()
        raise RequestTimeout(f"the request body was not received within {timeout:g}s", field="(body)",
                             function=function) from None
    return bytes(buf)
