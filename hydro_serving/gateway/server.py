"""Run the gateway in the foreground until SIGTERM/SIGINT, then stop every replica."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from hydro_serving.errors import ConfigError
from hydro_serving.gateway.app import create_app
from hydro_serving.gateway.config import GatewayConfig


def run_gateway(config: GatewayConfig) -> None:
    """Serve until a signal; aiohttp's cleanup hook stops the replicas (no orphans)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    app = create_app(config)
    print(f"hydro gateway on {config.url} (provider {config.provider}, state {config.state_dir})", flush=True)
    try:
        web.run_app(app, host=config.host, port=config.port, print=None, access_log=None, shutdown_timeout=10.0,
                    handle_signals=True)
    except OSError as exc:  # typically: the port is taken
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                          field="port") from None
