"""HTTP over a unix socket to a gateway on the same machine: ``http+unix://<percent-encoded socket path>``.

The URL form is requests-unixsocket's: the socket path, percent-encoded, is the host
(``http+unix://%2Frun%2Fhydro%2Fgateway.sock``); a path after it is ignored, since calls go to
``/function/<name>`` as with :class:`~hydro_serving.transport.http.HttpTransport`. Everything else is
that transport's: one keep-alive pool, connect failures (socket missing, nobody listening) retried
with backoff within the deadline, a lost connection or timeout final. Why a unix socket: a router
or stream worker beside its gateway skips the TCP/IP stack on every stage call; the gateway sets
``HYDRO_GATEWAY_TRANSPORT`` to this URL for local routers when it listens on one
(``hydro gateway --unix-socket PATH``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import quote, unquote, urlsplit

from hydro_serving.errors import ConfigError
from hydro_serving.transport import wire
from hydro_serving.transport.http import ConnectRetry, HttpTransport

SCHEME = "http+unix"


def unix_url(path: str) -> str:
    """The ``http+unix://`` URL of a socket path (what the gateway puts in ``HYDRO_GATEWAY_TRANSPORT``)."""
    return f"{SCHEME}://{quote(str(path), safe='')}"


def socket_path(url: str) -> str:
    """The socket path of an ``http+unix://`` URL; a ConfigError naming ``transport`` when there is none."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SCHEME:
        raise ConfigError(f"not an {SCHEME}:// URL: {url!r}", field="transport")
    path = unquote(parts.netloc)
    if not path or "\0" in path:
        raise ConfigError(f"{url!r} names no socket: use {SCHEME}://%2Fpath%2Fto%2Fgateway.sock", field="transport")
    return path


class UnixHttpTransport(HttpTransport):
    """POSTs to ``/function/<name>`` of the gateway listening on the socket of an ``http+unix://`` URL."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, pool_size: int = 16,
                 connect_timeout: float = 2.0, retry: ConnectRetry | None = None,
                 sleep: Callable[[float], None] | None = None, max_response: int | None = None) -> None:
        path = socket_path(url)
        extra = {"sleep": sleep} if sleep is not None else {}
        super().__init__("http://localhost", headers, pool_size, connect_timeout, retry, max_response=max_response,
                         **extra)
        self.socket_path = path
        # one socket path, one pool of idle connections (a burst beyond pool_size opens extra ones)
        self._unix_pool = wire.Pool(wire.Address("unix", path, "localhost"), pool_size)

    def url(self, function: str) -> str:
        return f"/function/{quote(function, safe='')}"

    def _target(self, function: str) -> tuple[wire.Pool, str]:
        return self._unix_pool, self.url(function)  # one socket, one pool: nothing to look up

    def close(self) -> None:
        self._unix_pool.close()
        super().close()
