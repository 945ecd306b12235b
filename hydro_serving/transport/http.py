"""HTTP over TCP to a gateway's ``/function/<name>``: the first transport behind the seam.

One keep-alive urllib3 pool (thread-safe) per transport. Only a connection that never opened
(refused, or connect timed out) is retried, with bounded exponential backoff and never past the
deadline: the function has seen nothing, so a retry cannot run it twice. A read timeout, a
connection lost mid-request or a garbled response is final, because the function may already
have done the work. (The same policy as the router's ``StageClient``, which is meant to move
onto this class.)
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


@dataclass(frozen=True)
class ConnectRetry:
    """Retries of connections that never opened: ``attempts`` extra tries, backoff doubling to ``max_backoff``."""

    attempts: int = 2
    backoff: float = 0.05
    max_backoff: float = 0.5

    def delay(self, retry_number: int) -> float:
        return min(self.backoff * (2**retry_number), self.max_backoff)


class HttpTransport(Transport):
    """POSTs to ``{gateway}/function/<name>``; ``headers`` (e.g. credentials) go with every call."""

    def __init__(self, gateway_url: str, headers: Mapping[str, str] | None = None, pool_size: int = 16,
                 connect_timeout: float = 2.0, retry: ConnectRetry | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self.retry = retry or ConnectRetry()
        self._sleep = sleep
        # block=False: a burst beyond pool_size opens extra connections instead of queueing on the pool
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False)

    def url(self, function: str) -> str:
        return f"{self.gateway_url}/function/{quote(function, safe='')}"

    def invoke(self, function: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        started = time.monotonic()
        deadline = started + timeout
        all_headers = {**self.headers, **headers}
        url = self.url(function)
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError("timeout", "no time left to call the function", attempt)
            attempt += 1
            try:
                response = self._pool.request(
                    "POST", url, body=body, headers=all_headers,
                    timeout=urllib3.Timeout(connect=min(self.connect_timeout, left), read=left),
                    retries=False, redirect=False, preload_content=True,
                )
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
            headers_out = {k.lower(): v for k, v in response.headers.items()}
            return Reply(response.status, response.data or b"", headers_out, time.monotonic() - started, attempt)

    def close(self) -> None:
        self._pool.clear()


def reason(exc: BaseException) -> str:
    """A short cause without urllib3's pool reprs: ``Connection refused``, ``Read timed out``."""
    if isinstance(exc, ProtocolError) and len(exc.args) > 1 and isinstance(exc.args[1], BaseException):
        inner = exc.args[1]
        return str(inner) or type(inner).__name__
    text = str(exc)
    if "[Errno" in text:
        return text.rsplit("]", 1)[-1].strip() or text
    if "): " in text:
        text = text.split("): ", 1)[1]
    return text.strip() or type(exc).__name__
