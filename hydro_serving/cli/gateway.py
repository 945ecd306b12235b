"""``hydro gateway``: run the gateway in the foreground (state in SQLite under --state)."""

from __future__ import annotations

from pathlib import Path

import click

from hydro_serving.gateway.config import DEFAULT_COLD_START_TIMEOUT, DEFAULT_PORT, GatewayConfig, default_state_dir


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State directory (functions, credentials, logs). Default: HYDRO_STATE or the user data dir.")
@click.option("--provider", default="local", show_default=True, help="Where replicas run: local, docker, knative.")
@click.option("--cold-start-timeout", default=DEFAULT_COLD_START_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0.1), help="Seconds a request may wait for a replica to become ready.")
@click.option("--auth-functions", is_flag=True, help="Require the admin credentials on /function/* too.")
def gateway(host: str, port: int, state: Path | None, provider: str, cold_start_timeout: float,
            auth_functions: bool) -> None:
    """Run the gateway: deploy, invoke and scale functions to zero."""
    from hydro_serving.gateway.server import run_gateway

    config = GatewayConfig(state_dir=(state or default_state_dir()).expanduser().resolve(), host=host, port=port,
                           provider=provider, cold_start_timeout=cold_start_timeout, auth_functions=auth_functions)
    run_gateway(config)
