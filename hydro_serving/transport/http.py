"""HTTP over TCP to a gateway's ``/function/<name>`` (or to a function's own URL): the first transport.

One keep-alive pool of sockets per address (:mod:`hydro_serving.transport.wire`, a small HTTP/1.1
client that replaced urllib3 on this path: it costs a fraction of urllib3's CPU per call); each
function's pool and path are resolved once, so a call does no URL parsing. Only a connection that
never opened (refused, or connect timed out) is retried, with bounded exponential backoff and never
past the deadline: the function has seen nothing, so a retry cannot run it twice. A timeout (the
deadline bounds the whole call, not each read), a connection lost
mid-request or a garbled response is final, because the function may already have done the work.

What the URL names:

* ``http://gateway:8080`` (no path): a gateway; a call of ``f`` posts to ``/function/f``;
* a URL containing ``{name}``: a template of each function's own address, formatted per function
  (on Knative ``http://{name}.hydro.svc.cluster.local``). A fragment is never sent, so
  ``http://127.0.0.1:41234/#{name}`` addresses one replica's root whatever the function: that is
  how the router's direct path (:mod:`hydro_serving.router.direct`) reaches a stage's replica.

The router's ``StageClient`` and the stream worker both call functions through this class.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from hydro_serving.errors import ConfigError
from hydro_serving.transport import wire
from hydro_serving.transport.base import Reply, Transport, TransportError

log = logging.getLogger(__name__)

MAX_TARGETS = 1024  # resolved (pool, path) pairs kept; function names come from specs, but stay bounded


@dataclass(frozen=True)
class ConnectRetry:
    """Retries of connections that never opened: ``attempts`` extra tries, backoff doubling to ``max_backoff``."""

    attempts: int = 2
    backoff: float = 0.05
    max_backoff: float = 0.5

    def delay(self, retry_number: int) -> float:
        return min(self.backoff * (2**retry_number), self.max_backoff)


class HttpTransport(Transport):
    """POSTs to ``{gateway}/function/<name>`` (or the ``{name}`` template); ``headers`` go with every call."""

    def __init__(self, gateway_url: str, headers: Mapping[str, str] | None = None, pool_size: int = 16,
                 connect_timeout: float = 2.0, retry: ConnectRetry | None = None,
                 sleep: Callable[[float], None] = time.sleep, max_response: int | None = None) -> None:
        self.template = gateway_url if "{name}" in gateway_url else None
        self.gateway_url = gateway_url.rstrip("/")
        self.headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self.retry = retry or ConnectRetry()
        self.max_response = max_response  # None: read whatever comes
        self.pool_size = pool_size
        self._sleep = sleep
        # one pool of idle sockets per host:port (a template may name several hosts); a burst beyond
        # pool_size opens extra sockets instead of queueing
        self._pools: dict[tuple[str, str, int], wire.Pool] = {}
        self._tls: ssl.SSLContext | None = None
        # function -> (its host's keep-alive pool, request path), resolved once
        self._targets: dict[str, tuple[wire.Pool, str]] = {}

    def url(self, function: str) -> str:
        if self.template is not None:
            return self.template.format(name=quote(function, safe=""))
        return f"{self.gateway_url}/function/{quote(function, safe='')}"

    def _target(self, function: str) -> tuple[wire.Pool, str]:
        target = self._targets.get(function)
        if target is None:
            url = self.url(function)
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")  # never the fragment
            target = (self._pool_for(parts.scheme.lower(), parts.hostname or "", parts.port, url), path)
            if len(self._targets) < MAX_TARGETS:
                self._targets[function] = target
        return target

    def _pool_for(self, scheme: str, host: str, port: int | None, url: str) -> wire.Pool:
        if scheme not in ("http", "https") or not host:
            raise ConfigError(f"{url!r} is not an http:// or https:// URL with a host", field="transport")
        port = port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            tls = None
            if scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()  # certificates verified, as urllib3 did
                tls = self._tls
            shown = f"[{host}]" if ":" in host else host
            host_header = shown if port == (443 if scheme == "https" else 80) else f"{shown}:{port}"
            address = wire.Address("tcp", (host, port), host_header, tls=tls, server_hostname=host)
            pool = self._pools.setdefault(key, wire.Pool(address, self.pool_size))
        return pool

    def invoke(self, function: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        started = time.monotonic()
        deadline = started + timeout
        all_headers = {**self.headers, **headers} if self.headers else headers
        pool, path = self._target(function)
        attempt = 0
        while True:
            if deadline - time.monotonic() <= 0:
                raise TransportError("timeout", "no time left to call the function", attempt)
            attempt += 1
            try:
                answer = pool.post(path, body, all_headers, deadline, self.connect_timeout, self.max_response)
            except wire.ConnectFailed as exc:  # nothing was sent: safe to try again
                left = deadline - time.monotonic()
                if attempt > self.retry.attempts or left <= 0:
                    raise TransportError("connect", str(exc), attempt) from None
                delay = min(self.retry.delay(attempt - 1), max(0.0, left))
                log.info("%s: connect failed (%s); retry %d in %.3fs", function, exc, attempt, delay)
                self._sleep(delay)
                continue
            except wire.WireTimeout as exc:
                raise TransportError("timeout", str(exc), attempt) from None
            except wire.TooLarge as exc:
                said = (f"the function answered {exc.length} bytes, more than {self.max_response}"
                        if exc.length is not None else f"the function answered more than {self.max_response} bytes")
                raise TransportError("too_large", said, attempt) from None
            except wire.WireError as exc:  # connection lost, bad status line, garbled framing or encoding
                raise TransportError("connection_lost", str(exc), attempt) from None
            return Reply(answer.status, answer.body, answer.headers, time.monotonic() - started, attempt)

    def close(self) -> None:
        self._targets.clear()
        for pool in list(self._pools.values()):
            pool.close()
