"""Gateway settings and the one definition of the default state directory.

The CLI and the gateway must agree on where state (and so the credentials file) lives, otherwise
``hydro deploy`` could not find the token of a gateway started by ``hydro up``; both call
:func:`default_state_dir`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8080
DEFAULT_GATEWAY_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_COLD_START_TIMEOUT = 120.0


def default_state_dir() -> Path:
    """``HYDRO_STATE``, else ``$HYDRO_HOME/state``, else the user's data directory ``.../hydro/state``."""
    if os.environ.get("HYDRO_STATE"):
        return Path(os.environ["HYDRO_STATE"]).expanduser()
    if os.environ.get("HYDRO_HOME"):
        return Path(os.environ["HYDRO_HOME"]).expanduser() / "state"
    import platformdirs

    return Path(platformdirs.user_data_dir("hydro")) / "state"


GATEWAY_SOCKET = "gateway.sock"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its terminating NUL


def default_unix_socket(state_dir: Path, provider: str) -> Path | None:
    """``<state>/gateway.sock`` for a local gateway, so local routers call it without TCP; None when the
    provider is not local (its routers are containers or pods) or the path is too long for a socket."""
    path = state_dir / GATEWAY_SOCKET
    if provider != "local" or len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return None
    return path


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs, read once at start (never per request)."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    provider: str = "local"
    cold_start_timeout: float = DEFAULT_COLD_START_TIMEOUT
    auth_functions: bool = False  # /function/* open unless configured otherwise
    stop_grace: float = 10.0  # seconds between SIGTERM and SIGKILL when a replica stops
    max_body: int = 10 * 1024 * 1024  # per request, unless the function sets limits.body (the runtime's default)
    body_timeout: float = 30.0  # seconds a caller has to send the whole body (else 408, connection closed)
    header_timeout: float = 15.0  # seconds a connection may take to send its request line and headers / stay idle
    max_connections: int = 1024  # open client connections; beyond it a new one gets 503 and is closed
    log_max_bytes: int = 10 * 1024 * 1024  # the gateway's and replicas' logs rotate past this size (0: never)
    docker_network: str | None = None  # docker provider: 'host' or a network name (else HYDRO_DOCKER_NETWORK)
    discover_interval: float = 60.0  # seconds between model discovery passes over the store (0: never)
    discover_unsafe_formats: bool = False  # discovery may adopt pickle (joblib, pickle): code from the store
    trusted_keys: str = ""  # HYDRO_TRUSTED_KEYS, inline 'ed25519:...' entries: only models they signed load
    unix_socket: Path | None = None  # also listen here (HYDRO_GATEWAY_SOCKET); local routers call it (http+unix)

    @property
    def url(self) -> str:
        """How replicas (routers) reach this gateway: always over loopback when bound to all interfaces."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def unix_url(self) -> str | None:
        """The ``http+unix://`` URL of :attr:`unix_socket` (what local routers get), or None."""
        if self.unix_socket is None:
            return None
        from hydro_serving.transport.unix import unix_url

        return unix_url(str(self.unix_socket))
