"""Run the gateway in the foreground until SIGTERM/SIGINT, then stop every replica."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiohttp import web

from hydro_serving.errors import ConfigError
from hydro_serving.gateway.app import create_app
from hydro_serving.gateway.config import GatewayConfig

log = logging.getLogger("hydro.gateway")


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


def run_gateway(config: GatewayConfig) -> None:
    """Serve until a signal; aiohttp's cleanup hook stops the replicas (no orphans).

    No access log (``access_log=None``): formatting a line per request costs more than the proxying
    itself on small requests; the gateway's Prometheus metrics count every request instead.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    log.info("event loop: %s", type(loop).__module__)
    app = create_app(config)
    print(f"hydro gateway on {config.url} (provider {config.provider}, state {config.state_dir})", flush=True)
    try:
        web.run_app(app, host=config.host, port=config.port, print=None, access_log=None, shutdown_timeout=10.0,
                    handle_signals=True, loop=loop)
    except OSError as exc:  # typically: the port is taken
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                          field="port") from None
