"""``hydro gateway``: run the gateway in the foreground (state in SQLite under --state)."""

from __future__ import annotations

from pathlib import Path

import click

from hydro_serving.gateway.config import (
    DEFAULT_COLD_START_TIMEOUT,
    DEFAULT_PORT,
    GatewayConfig,
    default_state_dir,
    default_unix_socket,
)
from hydro_serving.gateway.providers import PROVIDERS
from hydro_serving.replica.process import pid_alive


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
@click.option("--discover-unsafe-formats", is_flag=True,
              help="Let discovery adopt pickle-based files (joblib, pickle); they are code that replicas run.")
@click.option("--trusted-keys", envvar="HYDRO_TRUSTED_KEYS", default="",
              help="Comma-separated ed25519 public keys ('ed25519:BASE64' or .pub files): only models signed by "
                   "one of them are deployed and loaded (env HYDRO_TRUSTED_KEYS).")
@click.option("--max-body", default="10Mi", show_default=True,
              help="Largest request body a function accepts unless it sets limits.body (bytes, or 10Mi, 1MB).")
@click.option("--body-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a caller has to send a request body (else 408 and the connection is closed).")
@click.option("--header-timeout", default=15.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a connection may take to send its headers, or stay idle between requests.")
@click.option("--max-connections", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Open client connections; a connection beyond this gets 503 and is closed.")
@click.option("--log-max-size", default="10Mi", show_default=True,
              help="The gateway's log and each replica's log under <state>/logs are rotated (3 copies kept) "
                   "past this size; 0 never rotates.")
@click.option("--unix-socket", "unix_socket", envvar="HYDRO_GATEWAY_SOCKET", default=None, metavar="PATH|off",
              help="Also listen on this unix socket (same API and auth as the TCP port); local routers call their "
                   "stages through it. Default with the local provider: <state>/gateway.sock; 'off': TCP only "
                   "(env HYDRO_GATEWAY_SOCKET).")
def gateway(host: str, port: int, state: Path | None, provider: str, docker_network: str | None,
            cold_start_timeout: float, auth_functions: bool, discover_interval: float,
            discover_unsafe_formats: bool, trusted_keys: str, max_body: str,
            body_timeout: float, header_timeout: float, max_connections: int, log_max_size: str,
            unix_socket: str | None = None) -> None:
    """Run the gateway: deploy, invoke and scale functions to zero."""
    # the provider is built by name (providers.get_provider) as the gateway starts, so a missing extra
    # or a bad provider setting stops it at once with a one-line error, not at the first deploy
    from hydro_serving.gateway.server import run_gateway
    from hydro_serving.store.trust import parse_trusted_keys, trusted_keys_value

    keys = trusted_keys_value(parse_trusted_keys(trusted_keys.split(","), "--trusted-keys"))

    state_dir = (state or default_state_dir()).expanduser().resolve()
    if unix_socket is None:
        socket_path = default_unix_socket(state_dir, provider)
    elif unix_socket.strip().lower() in ("off", "none", "false", "0", ""):
        socket_path = None
    else:
        socket_path = Path(unix_socket).expanduser().absolute()
    config = GatewayConfig(state_dir=state_dir, host=host, port=port,
                           provider=provider, cold_start_timeout=cold_start_timeout, auth_functions=auth_functions,
                           docker_network=docker_network, discover_interval=discover_interval,
                           discover_unsafe_formats=discover_unsafe_formats, trusted_keys=keys,
                           max_body=_size(max_body, "--max-body"), body_timeout=body_timeout,
                           header_timeout=header_timeout, max_connections=max_connections,
                           log_max_bytes=0 if log_max_size.strip() == "0" else _size(log_max_size, "--log-max-size"),
                           unix_socket=socket_path)
    run_gateway(config)


def _size(raw: str, option: str) -> int:
    from hydro_serving.stack.model import parse_size

    try:
        value = parse_size(raw)
    except ValueError:
        raise click.BadParameter(f"must be a size such as 10Mi or 1048576, got {raw!r}",
                                 param_hint=option) from None
    if value < 1:
        raise click.BadParameter("must be at least 1 byte", param_hint=option)
    return value


def _is_our_gateway(pid: int, state_dir: Path) -> bool | None:
    """Whether process ``pid`` is a ``hydro gateway`` on ``state_dir`` (None: cannot tell, no /proc)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False if Path("/proc/self").exists() else None
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in argv]
    return "gateway" in args and any("hydro" in a for a in args[:3]) and str(state_dir) in args


@click.command()
@click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The state directory the gateway was started with (else HYDRO_STATE or the user data dir).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for a graceful stop before the gateway is killed.")
def down(state: Path | None, timeout: float) -> None:
    """Stop the gateway that 'hydro up' started in the background (its pid file is <state>/gateway.pid).

    The gateway stops its replicas as it exits; the pid file is removed. A pid file whose process
    is gone (or is no longer a gateway on this state directory) is stale: it is removed and nothing
    is signalled.
    """
    import os
    import signal
    import time

    state_dir = (state or default_state_dir()).expanduser().resolve()
    pid_path = state_dir / "gateway.pid"
    try:
        raw = pid_path.read_text().strip()
    except FileNotFoundError:
        click.echo(f"no gateway started by 'hydro up' to stop (no {pid_path})")
        return
    try:
        pid = int(raw)
        if pid <= 1:
            raise ValueError(raw)
    except ValueError:
        pid_path.unlink(missing_ok=True)
        click.echo(f"removed {pid_path}: it did not hold a process id ({raw[:40]!r})")
        return
    if not pid_alive(pid) or _is_our_gateway(pid, state_dir) is False:
        pid_path.unlink(missing_ok=True)
        click.echo(f"removed a stale pid file {pid_path} (process {pid} is not a running gateway); nothing to stop")
        return
    began = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    deadline = began + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    forced = pid_alive(pid)
    if forced:
        os.kill(pid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    how = f"killed after {timeout:g}s without stopping" if forced else f"stopped in {time.monotonic() - began:.1f}s"
    click.echo(f"gateway (pid {pid}) {how}; log {state_dir / 'gateway.log'}")
