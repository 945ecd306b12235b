"""``hydro gateway``: run the gateway in the foreground (state in SQLite under --state)."""

from __future__ import annotations

from pathlib import Path

import click

from hydro_serving.gateway.config import DEFAULT_COLD_START_TIMEOUT, DEFAULT_PORT, GatewayConfig, default_state_dir
from hydro_serving.gateway.providers import PROVIDERS


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State directory (functions, credentials, logs). Default: HYDRO_STATE or the user data dir.")
@click.option("--provider", default="local", show_default=True, type=click.Choice(sorted(PROVIDERS)),
              help="Where replicas run: local processes or docker containers (docker needs the docker extra).")
@click.option("--docker-network", default=None, help="docker provider: 'host' (default) or a docker network name "
              "(else HYDRO_DOCKER_NETWORK).")
@click.option("--cold-start-timeout", default=DEFAULT_COLD_START_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0.1), help="Seconds a request may wait for a replica to become ready.")
@click.option("--auth-functions", is_flag=True, help="Require a credential on /function/* too: an API key "
              "scoped to the function (hydro key create) or the admin token.")
@click.option("--discover-interval", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between passes that turn files put into the store (HYDRO_STORE) by other tools into "
                   "model versions; 0 turns discovery off.")
def gateway(host: str, port: int, state: Path | None, provider: str, docker_network: str | None,
            cold_start_timeout: float, auth_functions: bool, discover_interval: float) -> None:
    """Run the gateway: deploy, invoke and scale functions to zero."""
    # the provider is built by name (providers.get_provider) as the gateway starts, so a missing extra
    # or a bad provider setting stops it at once with a one-line error, not at the first deploy
    from hydro_serving.gateway.server import run_gateway

    config = GatewayConfig(state_dir=(state or default_state_dir()).expanduser().resolve(), host=host, port=port,
                           provider=provider, cold_start_timeout=cold_start_timeout, auth_functions=auth_functions,
                           docker_network=docker_network, discover_interval=discover_interval)
    run_gateway(config)
