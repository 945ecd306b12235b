"""``GET /system/logs``'s body: a function's log lines as NDJSON, ended cleanly when the reader goes.

Why its own loop: a followed log waits for new lines, so the handler never writes and never
learns that ``hydro logs --follow`` was stopped with Ctrl-C (aiohttp does not cancel handlers
when their client disconnects). The stream then lived until the gateway stopped, held the
shutdown for aiohttp's whole grace period (10 s), and died with an ERROR traceback in the
gateway's log ("aclose(): asynchronous generator is already running", "Task was destroyed but
it is pending"). Here the copy runs beside two watchers: the client's transport closing, and the
gateway beginning to stop; whichever comes first ends the copy and closes the provider's generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web

log = logging.getLogger("hydro.gateway")

GONE_POLL_SECONDS = 0.25


async def _client_gone(request: web.Request) -> None:
    """Return once the client's connection is closed (checked every GONE_POLL_SECONDS)."""
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(GONE_POLL_SECONDS)


async def stream_lines(request: web.Request, name: str, lines: AsyncIterator[str],
                       stopping: asyncio.Event) -> web.StreamResponse:
    """Write ``lines`` as ``{"name", "text"}`` NDJSON until they end, the client goes, or ``stopping`` is set."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)

    async def pump() -> None:
        async with contextlib.aclosing(lines):  # type: ignore[type-var]  # an async generator
            async for line in lines:
                await response.write(json.dumps({"name": name, "text": line}).encode() + b"\n")

    copy = asyncio.ensure_future(pump())
    gone = asyncio.ensure_future(_client_gone(request))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait({copy, gone, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (copy, gone, stop):
            task.cancel()
        results = await asyncio.gather(copy, gone, stop, return_exceptions=True)
    error = results[0]
    if copy in done and isinstance(error, ConnectionError):  # the reader left while a line was being written
        log.info("log stream of %s: the reader went away", name)
        return response
    if copy in done and isinstance(error, BaseException) and not isinstance(error, asyncio.CancelledError):
        raise error
    if gone in done:
        log.info("log stream of %s: the reader went away", name)
        return response
    if stop in done:
        log.info("log stream of %s: closed, the gateway is stopping", name)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
