"""HTTP calls from the router to its stages, through the gateway's ``/function/<name>``.

One keep-alive urllib3 ``PoolManager`` (thread-safe) serves every request thread of the router.
Only a connection that was never established (refused, or connect timed out) is retried, with
bounded exponential backoff and never past the deadline: the stage has seen nothing, so the retry
cannot run a prediction twice. A read timeout, a connection lost mid-request or a garbled
response is final, because the stage may already have done the work.

Every stage call and prewarm carries the router's own key (``HYDRO_ROUTER_KEY``, minted by the
gateway at deploy and scoped to this router's stages) as ``Authorization: Bearer``, in place of
any Authorization header of the caller: the caller's credential stops at the pipeline's door.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from hydro_serving.replica import contract
from hydro_serving.transport.http import ConnectRetry as RetryPolicy  # one retry rule for every caller

log = logging.getLogger(__name__)

PREWARM_HEADER = contract.PREWARM_HEADER
ROUTER_KEY_ENV = contract.ROUTER_KEY_ENV  # the router's key for its stages, set by the gateway in the replica's env
DEFAULT_MAX_RESPONSE = 10 * 1024 * 1024  # the runtime's body limit: what the next stage could take anyway


class StageCallError(Exception):
    """A stage call failed below HTTP; ``kind`` is ``connect``, ``timeout`` or ``connection_lost``."""

    def __init__(self, kind: str, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.attempts = attempts


@dataclass
class StageReply:
    """What a stage answered (any HTTP status), with the gateway's scaling headers decoded."""

    status: int
    body: bytes
    headers: dict[str, str]  # lower-case names
    seconds: float
    attempts: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")

    @property
    def cold_start(self) -> bool | None:
        value = self.headers.get("x-cold-start")
        if value is None:
            return None
        return value.strip().lower() == "true"

    @property
    def queue_ms(self) -> float | None:
        value = self.headers.get("x-queue-time-ms")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class StageClient:
    """Posts bodies to ``{gateway}/function/<name>``; thread-safe, one per router.

    On Knative there is no gateway: each stage is its own Service, so ``url_template`` (from
    ``HYDRO_STAGE_URL_TEMPLATE``, e.g. ``http://{name}.hydro.svc.cluster.local``) names the stage's
    root URL instead, and prewarming is left to Knative's activator.
    """

    def __init__(
        self,
        gateway_url: str,
        pool_size: int = 16,
        url_template: str | None = None,
        connect_timeout: float = 2.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        key: str | None = None,
        max_response: int = DEFAULT_MAX_RESPONSE,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        # read once when the router loads (never at import); None: a gateway without keys (or Knative)
        self.key = key if key is not None else (os.environ.get(ROUTER_KEY_ENV, "").strip() or None)
        self.url_template = url_template
        self.connect_timeout = connect_timeout
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.max_response = max_response  # a stage's answer is read at most this far (router memory is bounded)
        # block=False: a burst beyond pool_size opens extra connections instead of queueing on the pool
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False)
        # function -> (its host's keep-alive pool, request path): PoolManager.request would parse the
        # URL and look the pool up again on every stage call (~20 us of a hop that is ~100 us of CPU)
        self._targets: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}

    @property
    def can_prewarm(self) -> bool:
        """Only a gateway understands ``X-Hydro-Prewarm``; a bare Knative Service would run the request."""
        return self.url_template is None

    def _headers(self, headers: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The stage call's headers: the caller's Authorization never, the router's key when it has one."""
        out = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        out.update(extra or {})
        if self.key is not None:
            out["Authorization"] = f"Bearer {self.key}"
        return out

    def url(self, function: str) -> str:
        if self.url_template is not None:
            return self.url_template.format(name=function)
        return f"{self.gateway_url}/function/{function}"

    def _target(self, function: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The pool and path for ``function``, resolved once (the URL of a stage never changes)."""
        target = self._targets.get(function)
        if target is None:
            url = urllib3.util.parse_url(self.url(function))
            path = url.request_uri or "/"
            target = (self._pool.connection_from_url(self.url(function)), path)
            if len(self._targets) < 1024:  # bounded: function names come from the spec, but be safe
                self._targets[function] = target
        return target

    def post(
        self,
        function: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: Callable[[], float],
        on_retry: Callable[[int], None] | None = None,
    ) -> StageReply:
        """POST and return the reply; ``timeout()`` gives the seconds left now (re-read per attempt).

        Raises :class:`StageCallError` for failures below HTTP; any HTTP status is a reply.
        """
        started = time.monotonic()
        attempt = 0
        sent = self._headers(headers)
        while True:
            left = timeout()
            if left <= 0:
                raise StageCallError("timeout", "no time left to call the stage", attempt)
            attempt += 1
            pool, path = self._target(function)
            try:
                response = pool.urlopen(
                    "POST",
                    path,
                    body=body,
                    headers=sent,
                    timeout=urllib3.Timeout(connect=min(self.connect_timeout, left), read=left),
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                )
                data = _read_bounded(response, self.max_response, function)
            except ConnectTimeoutError as exc:  # includes NewConnectionError (refused): nothing was sent
                left = timeout()
                if attempt > self.retry.attempts or left <= 0:
                    raise StageCallError("connect", _reason(exc), attempt) from None
                delay = min(self.retry.delay(attempt - 1), max(0.0, left))
                log.info("stage %s: connect failed (%s); retry %d in %.3fs", function, _reason(exc), attempt, delay)
                if on_retry is not None:
                    on_retry(attempt)
                self._sleep(delay)
                continue
            except (ReadTimeoutError, Urllib3Timeout) as exc:
                raise StageCallError("timeout", _reason(exc), attempt) from None
            except HTTPError as exc:  # ProtocolError (connection lost, bad status line), decode errors
                raise StageCallError("connection_lost", _reason(exc), attempt) from None
            except OSError as exc:  # a socket error urllib3 did not wrap
                raise StageCallError("connection_lost", str(exc) or type(exc).__name__, attempt) from None
            # HTTPHeaderDict keeps names as sent; lower-case them once for StageReply's lookups
            headers_out = {k.lower(): v for k, v in response.headers.items()}
            return StageReply(response.status, data, headers_out, time.monotonic() - started, attempt)

    def prewarm(self, function: str, headers: Mapping[str, str], timeout: float = 2.0) -> tuple[int, bytes] | None:
        """Ask the gateway to make sure a replica of ``function`` is starting; (status, body), or None."""
        try:
            response = self._pool.request(
                "POST",
                self.url(function),
                body=b"",
                headers=self._headers(headers, {PREWARM_HEADER: "true"}),
                timeout=urllib3.Timeout(connect=min(self.connect_timeout, timeout), read=timeout),
                retries=False,
                redirect=False,
            )
        except (HTTPError, OSError) as exc:
            log.info("prewarm of %s failed: %s", function, _reason(exc))
            return None
        return response.status, response.data or b""

    def close(self) -> None:
        self._targets.clear()
        self._pool.clear()


def _read_bounded(response: urllib3.BaseHTTPResponse, limit: int, function: str) -> bytes:
    """The body, refused (``too_large``) past ``limit`` bytes, from ``Content-Length`` or while reading."""
    try:
        length = int(response.headers.get("Content-Length", "-1"))
    except ValueError:
        length = -1
    if length > limit:
        response.close()  # the body is never read: the connection cannot be reused
        raise StageCallError("too_large", f"the stage answered {length} bytes, more than {limit} "
                                          "(max_stage_response)")
    data = response.read(limit + 1, decode_content=True) or b""
    if len(data) > limit:
        response.close()  # the rest is never read: the connection cannot be reused
        raise StageCallError("too_large", f"the stage answered more than {limit} bytes (max_stage_response)")
    response.release_conn()
    return data


def _reason(exc: BaseException) -> str:
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
