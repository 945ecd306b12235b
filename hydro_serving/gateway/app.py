"""The gateway's aiohttp application: the :class:`Gateway` domain object wired to its HTTP routes.

``create_app(config, provider)`` builds everything from the config once (state, credentials,
provider, metrics registry); per request only the function's pool is looked up in a dict. The
domain object lives in :mod:`hydro_serving.gateway.core`, the handlers in
:mod:`hydro_serving.gateway.routes`; this module only assembles them (and stays the entry point).
"""

from __future__ import annotations

import json

from aiohttp import web

from hydro_serving import __version__
from hydro_serving.gateway.appkeys import ASYNC_KEY
from hydro_serving.gateway.asyncq import AsyncQueue
from hydro_serving.gateway.asyncroutes import ASYNC_ROUTES
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.core import Gateway
from hydro_serving.gateway.guard import guard_middleware
from hydro_serving.gateway.openapi import openapi_document
from hydro_serving.gateway.providers import Provider
from hydro_serving.gateway.requestid import add_request_id
from hydro_serving.gateway.routes import GATEWAY_KEY, OPENAPI_KEY, ROUTES, error_middleware, require_admin
from hydro_serving.monitor.api import register as register_monitoring
from hydro_serving.ui.mount import mount as mount_ui

__all__ = ["GATEWAY_KEY", "ROUTES", "Gateway", "create_app", "error_middleware"]


def create_app(config: GatewayConfig, provider: Provider | None = None) -> web.Application:
    """Build the gateway application; pools start on app startup, replicas stop on cleanup."""
    app = web.Application(middlewares=[error_middleware, guard_middleware], client_max_size=config.max_body)
    app.on_response_prepare.append(add_request_id)
    gateway = Gateway(config, provider)
    app[GATEWAY_KEY] = gateway
    app[OPENAPI_KEY] = json.dumps(openapi_document(__version__)).encode()
    queue = AsyncQueue(gateway)  # /async-function: durable async invocations (its state in gateway.db)
    app[ASYNC_KEY] = queue
    for method, path, handler in [*ROUTES, *ASYNC_ROUTES]:
        app.router.add_route(method, path, handler)
    # /system/monitoring/... and /system/feedback/<fn>, behind the admin guard
    register_monitoring(app, gateway.monitor, lambda: {n: p.spec for n, p in gateway.pools.items()}, require_admin)
    mount_ui(app, gateway)  # the web UI at /ui/ (hydro_serving.ui), behind its own admin login

    async def on_startup(_: web.Application) -> None:
        await gateway.start()
        await queue.start()  # after the pools exist: resumed calls find their function

    async def on_shutdown(_: web.Application) -> None:
        gateway.begin_stop()

    async def on_cleanup(_: web.Application) -> None:
        await queue.stop()  # first: attempts in flight are cut and re-queued before replicas stop
        await gateway.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
