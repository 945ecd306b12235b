"""The UI's routes on the gateway application, and its start and stop (the traffic sampler).

Why one function: the gateway adds the UI with one call (``mount(app, gateway)`` in
:mod:`hydro_serving.gateway.app`); nothing is built before it is called.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

import hydro_serving.ui.asyncview as asyncview
import hydro_serving.ui.sse as sse
import hydro_serving.ui.views as views
from hydro_serving.gateway.core import Gateway
from hydro_serving.ui.views import UI, UI_KEY

STATIC = Path(__file__).parent / "static"


def routes() -> list[tuple[str, str, object]]:
    return [
        ("GET", "/ui", views.index),
        ("GET", "/ui/", views.index),
        ("GET", "/ui/login", views.login_page),
        ("POST", "/ui/login", views.login),
        ("POST", "/ui/logout", views.logout),
        ("GET", "/ui/functions", views.functions),
        ("GET", "/ui/functions/{name}", views.function),
        ("POST", "/ui/functions/{name}/try", views.try_function),
        ("GET", "/ui/pipelines", views.pipelines),
        ("GET", "/ui/models", views.models),
        ("GET", "/ui/models/{name}", views.model),
        ("POST", "/ui/models/{name}/alias", views.move_alias),
        ("GET", "/ui/monitoring", views.monitoring),
        ("GET", "/ui/monitoring/{name}", views.monitor),
        ("GET", "/ui/async", asyncview.overview),
        ("POST", "/ui/async/redrive", asyncview.redrive_dead),
        ("POST", "/ui/async/purge", asyncview.purge_calls),
        ("GET", "/ui/async/{call_id}", asyncview.call),
        ("POST", "/ui/async/{call_id}/redrive", asyncview.redrive_call),
        ("POST", "/ui/async/{call_id}/purge", asyncview.purge_call),
        ("GET", "/ui/events/functions", sse.functions_events),
        ("GET", "/ui/events/functions/{name}", sse.function_events),
        ("GET", "/ui/events/logs/{name}", sse.log_events),
        ("GET", "/ui/events/async", sse.async_events),
    ]


def mount(app: web.Application, gateway: Gateway) -> UI:
    """Add ``/ui/...`` to the gateway's app; the sampler runs while the app runs."""
    ui = UI(gateway)
    app[UI_KEY] = ui
    for method, path, handler in routes():
        app.router.add_route(method, path, handler)
    app.router.add_static("/ui/static/", STATIC, append_version=False)

    async def on_startup(_: web.Application) -> None:
        ui.recorder.start(lambda: list(gateway.pools))

    async def on_shutdown(_: web.Application) -> None:
        ui.closing.set()  # live streams end, so shutdown does not wait for them

    async def on_cleanup(_: web.Application) -> None:
        await ui.recorder.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return ui
