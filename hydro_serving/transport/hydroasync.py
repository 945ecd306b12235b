"""``hydro-async://host:port``: a call handed to the gateway's durable async queue, answered 202 at once.

The third transport behind the seam (issue 17 point 4): the same :meth:`invoke` as HTTP, but it POSTs
to ``/async-function/<name>`` and returns the gateway's 202 :class:`~hydro_serving.transport.base.Reply`
(``x-call-id`` in its headers) instead of the function's answer. The answer goes to the callback URL
given as ``?callback=`` in the transport URL (or an ``X-Callback-Url`` header of the call), and is kept
for ``GET /system/async/<call-id>``. ``hydro-async+https://`` talks TLS to the gateway.

Retries: only a connection that never opened is retried here (as over HTTP); everything after the
202 (retries with backoff, the dead-letter queue) is the gateway's.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from hydro_serving.errors import ConfigError
from hydro_serving.transport.base import Reply
from hydro_serving.transport.http import HttpTransport

CALLBACK_HEADER = "X-Callback-Url"


class AsyncTransport(HttpTransport):
    """Submits calls to ``{gateway}/async-function/<name>``; ``reply.headers['x-call-id']`` names each."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, **kw: object) -> None:
        parts = urlsplit(url)
        scheme = "https" if parts.scheme.lower() == "hydro-async+https" else "http"
        if not parts.netloc:
            raise ConfigError(f"transport URL {url!r} has no host (e.g. hydro-async://127.0.0.1:8080)",
                              field="transport")
        query = parse_qs(parts.query)
        extra = dict(headers or {})
        callback = query.get("callback", [None])[0]
        if callback:
            extra.setdefault(CALLBACK_HEADER, callback)
        super().__init__(urlunsplit((scheme, parts.netloc, parts.path, "", "")), extra, **kw)  # type: ignore[arg-type]

    def url(self, function: str) -> str:
        return f"{self.gateway_url}/async-function/{quote(function, safe='')}"

    def invoke(self, function: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        """Submit; the Reply is the gateway's answer to the submit (202 and ``x-call-id``, or its 4xx)."""
        return super().invoke(function, body, headers, timeout)
