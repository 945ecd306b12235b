"""The typed keys of the gateway's aiohttp application, in a module of their own.

Why apart from the routes: helpers the routes call (callers, limits) read the app too, and importing
the keys from the routes module would make an import cycle.
"""

from __future__ import annotations

from aiohttp import web

from hydro_serving.gateway.asyncq import AsyncQueue
from hydro_serving.gateway.core import Gateway

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
OPENAPI_KEY: web.AppKey[bytes] = web.AppKey("openapi", bytes)
ASYNC_KEY: web.AppKey[AsyncQueue] = web.AppKey("async_queue", AsyncQueue)
