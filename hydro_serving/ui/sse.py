"""Server-Sent Events of the web UI: the functions table, one function's numbers, its log lines.

Why SSE: one long GET per page that the browser reconnects by itself, no WebSocket upgrade, and a
plain text format. Each stream needs a session (401 otherwise, like every API call without
credentials), sends a comment line as a heartbeat, and ends when the client goes away or the
gateway shuts down. Payloads are JSON built by :mod:`.data`, the same the pages print.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

import hydro_serving.ui.asyncview as asyncview
import hydro_serving.ui.data as data
from hydro_serving.ui.views import UI_KEY

PERIOD = 1.0  # seconds between updates of the live numbers
KEEPALIVE = 15.0  # seconds of silence before a comment line keeps proxies from closing the stream


async def _open(request: web.Request) -> web.StreamResponse:
    request.app[UI_KEY].sessions.require(request)  # 401 without a session, before anything is sent
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    return response


def _event(name: str, payload: Any) -> bytes:
    text = json.dumps(payload, separators=(",", ":"), default=str)
    return f"event: {name}\ndata: {text}\n\n".encode()


async def _periodic(request: web.Request, build: Any, name: str) -> web.StreamResponse:
    ui = request.app[UI_KEY]
    response = await _open(request)
    try:
        while not ui.closing.is_set():
            if ui.sessions.current(request) is None:  # logged out elsewhere: stop streaming
                await response.write(_event("logout", {}))
                break
            ui.sample()
            await response.write(_event(name, build()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ui.closing.wait(), PERIOD)
    except (ConnectionResetError, RuntimeError):  # the browser went away
        pass
    return response


async def functions_events(request: web.Request) -> web.StreamResponse:
    """Every function's row (as the table prints it) each second."""
    ui = request.app[UI_KEY]
    gw = ui.gateway
    return await _periodic(request, lambda: [data.live_row(r) for r in data.function_rows(gw, ui.recorder)],
                           "functions")


async def function_events(request: web.Request) -> web.StreamResponse:
    """One function's row, replicas, cold start split and sparklines each second."""
    ui = request.app[UI_KEY]
    gw = ui.gateway
    name = request.match_info["name"]
    ui.sessions.require(request)
    gw.pool(name)  # 404 before the stream opens

    def build() -> dict[str, Any]:
        if name not in gw.pools:
            return {"gone": True}
        detail = data.function_detail(gw, ui.recorder, name)
        return {"row": data.live_row(detail["row"]), "cold": data.cold_text(detail["cold"]),
                "replicas": detail["replicas"], "spark_rps": str(detail["spark_rps"]),
                "spark_latency": str(detail["spark_latency"])}

    return await _periodic(request, build, "function")


async def async_events(request: web.Request) -> web.StreamResponse:
    """The Async screen's counts table (calls per function and state) each second."""
    return await _periodic(request, lambda: asyncview.live(request), "async")


async def log_events(request: web.Request) -> web.StreamResponse:
    """The function's log lines as they are written (after the last :data:`LOG_TAIL`)."""
    ui = request.app[UI_KEY]
    gw = ui.gateway
    name = request.match_info["name"]
    ui.sessions.require(request)
    gw.pool(name)
    response = await _open(request)
    lines = gw.provider.logs(name, tail=0, follow=True).__aiter__()
    # the next line is awaited as a task and never cancelled by a timeout: cancelling an async
    # generator mid-wait would close it, and the stream would end after the first quiet period
    closing = asyncio.ensure_future(ui.closing.wait())
    upcoming: asyncio.Future[str] | None = None
    try:
        while True:
            if upcoming is None:
                upcoming = asyncio.ensure_future(lines.__anext__())
            done, _ = await asyncio.wait({upcoming, closing}, timeout=KEEPALIVE,
                                         return_when=asyncio.FIRST_COMPLETED)
            if closing in done:
                break
            if upcoming in done:
                try:
                    line = upcoming.result()
                except StopAsyncIteration:
                    break
                upcoming = None
                await response.write(_event("log", {"text": line}))
            elif ui.sessions.current(request) is None:
                break
            else:
                await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, RuntimeError):
        pass
    finally:
        for task in (upcoming, closing):
            if task is not None:
                task.cancel()
        with contextlib.suppress(Exception):
            await lines.aclose()  # type: ignore[attr-defined]
    return response
