"""The router's calls to its stages, through the transport seam (:mod:`hydro_serving.transport`).

The transport is chosen by the URL the router is given (``open_transport``): ``http://gateway``
today, ``http+unix://`` for a gateway on the same machine, or on Knative a ``{name}`` template of
each stage's Service, with nothing else to change here. The transport keeps the connection rules
(keep-alive pool, the one connect-retry rule :class:`~hydro_serving.transport.http.ConnectRetry`,
deadline, bounded answers); this module adds what is the router's own:

* every stage call and prewarm to the gateway carries the router's own key (``HYDRO_ROUTER_KEY``,
  minted by the gateway at deploy and scoped to this router's stages) as ``Authorization: Bearer``,
  in place of any Authorization header of the caller: the caller's credential stops at the
  pipeline's door;
* a stage's answer is read at most ``max_response`` bytes (``too_large`` past it);
* with a :class:`~hydro_serving.router.direct.DirectPaths`, a call goes straight to a warm replica
  of the stage when the gateway leased one, and through the gateway otherwise (see that module).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hydro_serving.replica import contract
from hydro_serving.router.direct import DirectPaths
from hydro_serving.transport import Reply, TransportError, open_transport
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
class StageReply(Reply):
    """What a stage answered (any HTTP status), with the gateway's scaling headers decoded."""

    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, reply: Reply) -> StageReply:
        return cls(reply.status, reply.body, reply.headers, reply.seconds, reply.attempts)  # the body is not copied

    @property
    def cold_start(self) -> bool | None:
        value = self.headers.get("x-cold-start")
        if value is None:
            return None
        return value.strip().lower() == "true"

    @property
    def direct(self) -> bool:
        """True when the router called the stage's replica itself (not through the gateway)."""
        return self.headers.get("x-hydro-direct") == "true"

    @property
    def queue_ms(self) -> float | None:
        value = self.headers.get("x-queue-time-ms")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class StageClient:
    """Calls stages by name through one transport (and the direct path when given); thread-safe, one per router.

    On Knative there is no gateway: each stage is its own Service, so ``url_template`` (from
    ``HYDRO_STAGE_URL_TEMPLATE``, e.g. ``http://{name}.hydro.svc.cluster.local``) is the transport's
    URL instead, and prewarming is left to Knative's activator.
    """

    def __init__(
        self,
        gateway_url: str,
        pool_size: int = 16,
        url_template: str | None = None,
        connect_timeout: float = 2.0,
        retry: RetryPolicy | None = None,
        key: str | None = None,
        max_response: int = DEFAULT_MAX_RESPONSE,
        direct: DirectPaths | None = None,
    ) -> None:
        # read once when the router loads (never at import); None: a gateway without keys (or Knative)
        self.key = key if key is not None else (os.environ.get(ROUTER_KEY_ENV, "").strip() or None)
        self.url_template = url_template
        self.max_response = max_response  # a stage's answer is read at most this far (router memory is bounded)
        self.transport = open_transport(url_template if url_template is not None else gateway_url, {},
                                        pool_size=pool_size, connect_timeout=connect_timeout,
                                        retry=retry or RetryPolicy(), max_response=max_response)
        self.direct = direct

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

    def post(
        self,
        function: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: Callable[[], float],
        on_retry: Callable[[int], None] | None = None,
    ) -> StageReply:
        """Call ``function`` and return its reply; ``timeout()`` gives the seconds left now.

        Raises :class:`StageCallError` for failures below HTTP; any HTTP status is a reply.
        """
        left = timeout()
        if left <= 0:
            raise StageCallError("timeout", "no time left to call the stage", 0)
        if self.direct is not None:
            plain = {k: v for k, v in headers.items() if k.lower() != "authorization"}  # a replica is a stranger
            try:
                reply = self.direct.call(function, body, plain, left)
            except TransportError as err:
                raise self._error(err) from None
            if reply is not None:
                reply.headers["x-hydro-direct"] = "true"
                return StageReply.of(reply)
            left = timeout()  # no lease, or the replica went away: the gateway path, with what is left
            if left <= 0:
                raise StageCallError("timeout", "no time left to call the stage", 0)
        try:
            reply = self.transport.invoke(function, body, self._headers(headers), left)
        except TransportError as err:
            _retried(on_retry, err.attempts)
            raise self._error(err) from None
        _retried(on_retry, reply.attempts)
        return StageReply.of(reply)

    @staticmethod
    def _error(err: TransportError) -> StageCallError:
        message = f"{err.message} (max_stage_response)" if err.kind == "too_large" else err.message
        return StageCallError(err.kind, message, err.attempts)

    def prewarm(self, function: str, headers: Mapping[str, str], timeout: float = 2.0) -> tuple[int, bytes] | None:
        """Ask the gateway to make sure a replica of ``function`` is starting; (status, body), or None."""
        try:
            reply = self.transport.invoke(function, b"", self._headers(headers, {PREWARM_HEADER: "true"}), timeout)
        except TransportError as exc:
            log.info("prewarm of %s failed: %s", function, exc.message)
            return None
        return reply.status, reply.body

    def close(self) -> None:
        if self.direct is not None:
            self.direct.close()
        self.transport.close()


def _retried(on_retry: Callable[[int], None] | None, attempts: int) -> None:
    """Tell ``on_retry`` of each connect retry the transport made (it retries by itself)."""
    if on_retry is not None:
        for n in range(1, attempts):
            on_retry(n)
