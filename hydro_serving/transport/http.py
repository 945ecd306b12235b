"""HTTP over TCP to a gateway's ``/function/<name>`` (or to a function's own URL): the first transport.

One keep-alive urllib3 pool (thread-safe) per transport; each function's pool and path are
resolved once, so a call does no URL parsing. Only a connection that never opened (refused, or
connect timed out) is retried, with bounded exponential backoff and never past the deadline: the
function has seen nothing, so a retry cannot run it twice. A read timeout, a connection lost
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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

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
        self._sleep = sleep
        # block=False: a burst beyond pool_size opens extra connections instead of queueing on the pool
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False)
        # function -> (its host's keep-alive pool, request path): PoolManager.request would parse the URL
        # and look the pool up again on every call (~20 us of a hop that is ~100 us of CPU)
        self._targets: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}

    def url(self, function: str) -> str:
        if self.template is not None:
            return self.template.format(name=quote(function, safe=""))
        return f"{self.gateway_url}/function/{quote(function, safe='')}"

    def _target(self, function: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        target = self._targets.get(function)
        if target is None:
            url = self.url(function)
            path = urllib3.util.parse_url(url).request_uri or "/"  # never the fragment
            target = (self._pool.connection_from_url(url), path)
            if len(self._targets) < MAX_TARGETS:
                self._targets[function] = target
        return target

    def invoke(self, function: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        started = time.monotonic()
        deadline = started + timeout
        all_headers = {**self.headers, **headers} if self.headers else headers
        pool, path = self._target(function)
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError("timeout", "no time left to call the function", attempt)
            attempt += 1
            try:
                response = pool.urlopen(
                    "POST", path, body=body, headers=all_headers,
                    timeout=urllib3.Timeout(connect=min(self.connect_timeout, left), read=left),
                    retries=False, redirect=False, assert_same_host=False, preload_content=False,
                )
                data = read_bounded(response, self.max_response, attempt)
            except ConnectTimeoutError as exc:  # includes NewConnectionError (refused): nothing was sent
                left = deadline - time.monotonic()
                if attempt > self.retry.attempts or left <= 0:
                    raise TransportError("connect", reason(exc), attempt) from None
                delay = min(self.retry.delay(attempt - 1), max(0.0, left))
                log.info("%s: connect failed (%s); retry %d in %.3fs", function, reason(exc), attempt, delay)
                self._sleep(delay)
                continue
            except (ReadTimeoutError, Urllib3Timeout) as exc:
                raise TransportError("timeout", reason(exc), attempt) from None
            except HTTPError as exc:  # ProtocolError (connection lost, bad status line), decode errors
                raise TransportError("connection_lost", reason(exc), attempt) from None
            except OSError as exc:  # a socket error urllib3 did not wrap
                raise TransportError("connection_lost", str(exc) or type(exc).__name__, attempt) from None
            # HTTPHeaderDict keeps names as sent; lower-case them once for Reply's lookups
            headers_out = {k.lower(): v for k, v in response.headers.items()}
            return Reply(response.status, data, headers_out, time.monotonic() - started, attempt)

    def close(self) -> None:
        self._targets.clear()
        self._pool.clear()


def read_bounded(response: urllib3.BaseHTTPResponse, limit: int | None, attempt: int = 1) -> bytes:
    """The body, refused (``too_large``) past ``limit`` bytes, from ``Content-Length`` or while reading."""
    if limit is None:
        data = response.read(decode_content=True) or b""
        response.release_conn()
        return data
    try:
        length = int(response.headers.get("Content-Length", "-1"))
    except ValueError:
        length = -1
    if length > limit:
        response.close()  # the body is never read: the connection cannot be reused
        raise TransportError("too_large", f"the function answered {length} bytes, more than {limit}", attempt)
    data = response.read(limit + 1, decode_content=True) or b""
    if len(data) > limit:
        response.close()  # the rest is never read: the connection cannot be reused
        raise TransportError("too_large", f"the function answered more than {limit} bytes", attempt)
    response.release_conn()
    return data


def reason(exc: BaseException) -> str:
    """A short cause without urllib3's pool reprs: ``Connection refused``, ``Read timed out``."""
    if isinstance(exc, ProtocolError) and len(exc.args) > 1 and isinstance(exc.args[1], BaseException):
        inner = exc.args[1]
        return str(inner) or type(inner).__name__
    text = str(exc)
    if "[Errno" in text:
        return text.rsplit("]", 1)[-1].strip() or text
    if "): " in text:  # "HTTPConnectionPool(host=..., port=...): Read timed out. (read timeout=0.5)"
        text = text.split("): ", 1)[1]
    return text.strip() or type(exc).__name__
